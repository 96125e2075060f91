package analyze

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config holds every detector's settings. The defaults suit a real cluster:
// floors keep quiet workloads from paging on noise.
type Config struct {
	// Lateness is how late a flow may arrive and still count in its window.
	Lateness time.Duration `json:"lateness"`
	// MaxKeys bounds each detector's tracked keys (LRU eviction beyond it).
	MaxKeys int `json:"maxKeys"`
	// Samples is how many example flows a finding keeps.
	Samples int `json:"samples"`

	MetadataAccess     MetadataAccessConfig     `json:"metadataAccess"`
	EgressSpike        EgressSpikeConfig        `json:"egressSpike"`
	EgressDenialSpike  EgressDenialSpikeConfig  `json:"egressDenialSpike"`
	CrossNamespaceDeny CrossNamespaceDenyConfig `json:"crossNamespaceDenial"`
	DenialRate         DenialRateConfig         `json:"denialRate"`
	DNSTunnel          DNSTunnelConfig          `json:"dnsTunnel"`
	LateralScan        LateralScanConfig        `json:"lateralScan"`
	Beacon             BeaconConfig             `json:"beacon"`
	PlaintextInMesh    PlaintextInMeshConfig    `json:"plaintextInMesh"`
}

// MetadataAccessConfig: any pod flow to a cloud metadata service.
type MetadataAccessConfig struct {
	Enabled      bool          `json:"enabled"`
	Window       time.Duration `json:"window"`
	ResolveAfter int           `json:"resolveAfter"`
	Addresses    []string      `json:"addresses"`
	Names        []string      `json:"names"`
}

// EgressSpikeConfig: flows (or bytes, when the source reports them) per
// workload to outside the cluster against the workload's own baseline.
type EgressSpikeConfig struct {
	Enabled      bool          `json:"enabled"`
	Window       time.Duration `json:"window"`
	ResolveAfter int           `json:"resolveAfter"`
	// WarmupWindows of history are needed before a workload can fire.
	WarmupWindows int `json:"warmupWindows"`
	// MinFlows and MinBytes are absolute floors per window.
	MinFlows uint64 `json:"minFlows"`
	MinBytes uint64 `json:"minBytes"`
	// Factor over the baseline for a warning, CriticalFactor for critical.
	Factor         float64 `json:"factor"`
	CriticalFactor float64 `json:"criticalFactor"`
	// CriticalMinFlows is the floor for critical (a sudden burst).
	CriticalMinFlows uint64 `json:"criticalMinFlows"`
}

// EgressDenialSpikeConfig: a burst of dropped egress from one workload.
type EgressDenialSpikeConfig struct {
	Enabled      bool          `json:"enabled"`
	Window       time.Duration `json:"window"`
	ResolveAfter int           `json:"resolveAfter"`
	MinDropped   uint64        `json:"minDropped"`
}

// CrossNamespaceDenyConfig: policy denials between different namespaces.
type CrossNamespaceDenyConfig struct {
	Enabled      bool          `json:"enabled"`
	Window       time.Duration `json:"window"`
	ResolveAfter int           `json:"resolveAfter"`
	MinDenied    uint64        `json:"minDenied"`
}

// DenialRateConfig: the denied share of a namespace's flows far above its baseline.
type DenialRateConfig struct {
	Enabled       bool          `json:"enabled"`
	Window        time.Duration `json:"window"`
	ResolveAfter  int           `json:"resolveAfter"`
	WarmupWindows int           `json:"warmupWindows"`
	MinFlows      uint64        `json:"minFlows"`
	MinShare      float64       `json:"minShare"`
	Factor        float64       `json:"factor"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Lateness: 5 * time.Second, MaxKeys: 100000, Samples: 5,
		MetadataAccess: MetadataAccessConfig{Enabled: true, Window: time.Minute, ResolveAfter: 5,
			Addresses: []string{"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"},
			Names:     []string{"metadata.google.internal", "metadata.google.internal.", "instance-data.ec2.internal"}},
		EgressSpike: EgressSpikeConfig{Enabled: true, Window: time.Minute, ResolveAfter: 3, WarmupWindows: 5,
			MinFlows: 120, MinBytes: 50 << 20, Factor: 5, CriticalFactor: 20, CriticalMinFlows: 2000},
		EgressDenialSpike:  EgressDenialSpikeConfig{Enabled: true, Window: time.Minute, ResolveAfter: 3, MinDropped: 20},
		CrossNamespaceDeny: CrossNamespaceDenyConfig{Enabled: true, Window: 5 * time.Minute, ResolveAfter: 2, MinDenied: 1},
		DenialRate: DenialRateConfig{Enabled: true, Window: 5 * time.Minute, ResolveAfter: 2, WarmupWindows: 3,
			MinFlows: 50, MinShare: 0.2, Factor: 3},
		DNSTunnel:       defaultDNSTunnel(),
		LateralScan:     defaultLateralScan(),
		Beacon:          defaultBeacon(),
		PlaintextInMesh: defaultPlaintextInMesh(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxKeys < 1 {
		errs = append(errs, errors.New("maxKeys must be positive"))
	}
	for name, w := range map[string]time.Duration{
		"metadataAccess": c.MetadataAccess.Window, "egressSpike": c.EgressSpike.Window,
		"egressDenialSpike": c.EgressDenialSpike.Window, "crossNamespaceDenial": c.CrossNamespaceDeny.Window,
		"denialRate": c.DenialRate.Window, "dnsTunnel": c.DNSTunnel.Window, "lateralScan": c.LateralScan.Window,
		"plaintextInMesh": c.PlaintextInMesh.Window,
	} {
		if w <= 0 {
			errs = append(errs, fmt.Errorf("%s.window must be positive", name))
		}
	}
	for _, a := range c.MetadataAccess.Addresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("metadataAccess.addresses: %w", err))
		}
	}
	if c.EgressSpike.Factor <= 1 || c.EgressSpike.CriticalFactor < c.EgressSpike.Factor {
		errs = append(errs, errors.New("egressSpike: need 1 < factor <= criticalFactor"))
	}
	if c.DenialRate.MinShare <= 0 || c.DenialRate.MinShare > 1 {
		errs = append(errs, errors.New("denialRate.minShare must be in (0, 1]"))
	}
	errs = append(errs, c.DNSTunnel.validate(), c.LateralScan.validate(), c.Beacon.validate(), c.PlaintextInMesh.validate())
	return errors.Join(errs...)
}

func (c *Config) detectors(sink FindingSink, m *Metrics) []Detector {
	var ds []Detector
	if c.MetadataAccess.Enabled {
		ds = append(ds, newMetadataAccess(c.MetadataAccess, c, sink, m))
	}
	if c.EgressSpike.Enabled {
		ds = append(ds, newEgressSpike(c.EgressSpike, c, sink, m))
	}
	if c.EgressDenialSpike.Enabled {
		ds = append(ds, newEgressDenialSpike(c.EgressDenialSpike, c, sink, m))
	}
	if c.CrossNamespaceDeny.Enabled {
		ds = append(ds, newCrossNamespaceDenial(c.CrossNamespaceDeny, c, sink, m))
	}
	if c.DenialRate.Enabled {
		ds = append(ds, newDenialRate(c.DenialRate, c, sink, m))
	}
	if c.DNSTunnel.Enabled {
		ds = append(ds, newDNSTunnel(c.DNSTunnel, c, sink, m))
	}
	if c.LateralScan.Enabled {
		ds = append(ds, newLateralScan(c.LateralScan, c, sink, m))
	}
	if c.Beacon.Enabled {
		ds = append(ds, newBeacon(c.Beacon, c, sink, m))
	}
	if c.PlaintextInMesh.Enabled {
		ds = append(ds, newPlaintextInMesh(c.PlaintextInMesh, c, sink, m))
	}
	return ds
}
