package hubble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flowwarden/flowwarden/ingest"
	"github.com/flowwarden/flowwarden/schema"
)

// ObserverConfig configures the GetFlows client.
type ObserverConfig struct {
	// Addr is Hubble Relay's or an agent's address (host:port, or unix:///path).
	Addr string
	TLS  TLSConfig
	// Since starts the stream at this time (zero: from now, as `hubble observe -f`).
	Since time.Time
	// MinBackoff and MaxBackoff bound the reconnect pauses (default 200 ms, 30 s).
	MinBackoff, MaxBackoff time.Duration
	// BatchSize is how many flows are handed to the sink at once (default
	// 4096; each hand-over is one spool append and fsync, so this bounds
	// their cadence at high rates); a partial batch is handed over after
	// BatchLinger (default 200 ms), which bounds the latency at low rates.
	BatchSize   int
	BatchLinger time.Duration
	// Window bounds the flows' times around this host's clock: flows
	// further ahead than its skew (or, with MaxAge, older) are rejected
	// and counted, and a resume point beyond now + skew is not used.
	Window ingest.TimeWindow
	// Shard, when it is one of several (serve --shard i/N), subscribes to
	// this replica's share only, listing the namespaces every ShardRefresh
	// (default 30 s); see shard.go.
	Shard        Shard
	ShardRefresh time.Duration
}

func (c *ObserverConfig) validate() error {
	if c.Addr == "" {
		return errors.New("hubble observer: address is required")
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.BatchSize == 0 {
		c.BatchSize = 4096
	}
	if c.BatchLinger == 0 {
		c.BatchLinger = 200 * time.Millisecond
	}
	return nil
}

// Observer streams flows from the observer API into a sink, reconnecting
// with backoff. After a reconnect it resumes from the time of the newest
// flow the sink accepted, and drops the flows at that same time the sink
// already had, so the stream has neither gaps nor duplicates. The resume
// point moves only over flows the sink accepted: flows received but
// refused by the sink (a spool that cannot append) are asked for again.
type Observer struct {
	cfg   ObserverConfig
	sink  ingest.Sink
	stats *ingest.Stats
	log   *slog.Logger

	last     time.Time     // time of the newest flow the sink accepted
	lastSeen atomic.Int64  // last, in Unix nanoseconds, for other goroutines
	atLast   []schema.Flow // accepted flows with time == last
	connects atomic.Int32
	// streaming is true while a GetFlows stream is open; streamErr is why
	// the last one ended (for readiness).
	streaming atomic.Bool
	streamErr atomic.Pointer[string]
	// resumeKeys are the FlowKeys of flows at last that were stored before
	// this process started (see Resume).
	resumeKeys  map[string]int
	resumeUntil time.Time // the newest time among resumeKeys
}

// NewObserver validates the config; it does no I/O.
func NewObserver(cfg ObserverConfig, sink ingest.Sink, stats *ingest.Stats, log *slog.Logger) (*Observer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if stats == nil {
		stats = &ingest.Stats{}
	}
	return &Observer{cfg: cfg, sink: sink, stats: stats, log: log.With("component", "hubble-observer", "addr", cfg.Addr), last: cfg.Since}, nil
}

// Resume makes the stream start at since, dropping the flows at exactly
// that time whose FlowKey is among keys (with multiplicity): they are
// already stored. Call before Run. A since later than the window allows
// (now + skew: a flow from a node with a wrong clock, stored before times
// were checked) would make the stream wait for that time, so it is not
// used: the stream starts where the config says (Since, or live), and
// Resume reports false.
func (o *Observer) Resume(since time.Time, keys []string) bool {
	return o.ResumeThrough(since, since, keys)
}

// ResumeThrough is Resume with the stored keys spread from since through
// until: a sharded replica (see Shard) resumes after the newest flow surely
// of its share, and drops the flows from then on that are already stored.
func (o *Observer) ResumeThrough(since, until time.Time, keys []string) bool {
	if latest := o.cfg.Window.Latest(); !latest.IsZero() && since.After(latest) {
		o.log.Warn("the newest durable flow is in the future; not resuming after it (flows since then that the stream no longer holds are not recovered)",
			"newest_durable", since, "latest_accepted", latest, "start", o.cfg.Since)
		return false
	}
	o.last = since
	o.resumeUntil = since
	if until.After(since) {
		o.resumeUntil = until
	}
	o.resumeKeys = map[string]int{}
	for _, k := range keys {
		o.resumeKeys[k]++
	}
	return true
}

// LastFlowTime is the time of the newest flow the sink accepted (zero
// before any).
func (o *Observer) LastFlowTime() time.Time {
	if n := o.lastSeen.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// Connects counts the streams opened so far.
func (o *Observer) Connects() int { return int(o.connects.Load()) }

// Connected reports why no flow stream is open now (nil while one is).
func (o *Observer) Connected(context.Context) error {
	if o.streaming.Load() {
		return nil
	}
	if e := o.streamErr.Load(); e != nil {
		return fmt.Errorf("no flow stream from %s: %s", o.cfg.Addr, *e)
	}
	return fmt.Errorf("no flow stream from %s yet", o.cfg.Addr)
}

// Run streams until ctx ends.
func (o *Observer) Run(ctx context.Context) error {
	creds := insecure.NewCredentials()
	if o.cfg.TLS.Enabled {
		tc, err := o.cfg.TLS.ClientConfig()
		if err != nil {
			return fmt.Errorf("hubble observer: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(o.cfg.Addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return fmt.Errorf("hubble observer %s: %w", o.cfg.Addr, err)
	}
	defer conn.Close()
	client := observer.NewObserverClient(conn)
	if o.cfg.Shard.Sharded() {
		client = newShardClient(client, o.cfg.Shard, o.cfg.ShardRefresh, o.log)
	}
	backoff := o.cfg.MinBackoff
	for {
		received, err := o.stream(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			msg := err.Error()
			o.streamErr.Store(&msg)
		}
		if received > 0 {
			backoff = o.cfg.MinBackoff
		}
		o.log.Warn("flow stream ended; reconnecting", "err", err, "received", received, "resume_from", o.last, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, o.cfg.MaxBackoff)
	}
}

// stream runs one GetFlows call and returns how many new flows it delivered.
func (o *Observer) stream(ctx context.Context, client observer.ObserverClient) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &observer.GetFlowsRequest{Follow: true}
	if !o.last.IsZero() {
		req.Since = timestamppb.New(o.last)
	}
	// Responses arrive undecoded and the wireDecoder reads them straight
	// into records (a third of serve's CPU went to proto.Unmarshal and
	// FromProto's copies).
	st, err := client.GetFlows(ctx, req, grpc.ForceCodecV2(wireCodec{protoCodec()}))
	if err != nil {
		return 0, err
	}
	o.connects.Add(1)
	o.streaming.Store(true)
	defer o.streaming.Store(false)
	// The stream starts at since and sends the flows at that time again:
	// those the sink took before are dropped once each.
	since := o.last
	repeats := append([]schema.Flow(nil), o.atLast...)
	stored, storedUntil := maps.Clone(o.resumeKeys), o.resumeUntil
	o.log.Info("streaming flows", "since", since)

	// Receive and convert in a goroutine, so that a partial batch can be
	// handed over on a timer while Recv blocks, and so that the next batch
	// is received and decoded while the sink takes this one (the spool's
	// fsync): the stream stalls only when a whole batch waits.
	type item struct {
		rec schema.Flow
		err error // the stream's end
	}
	items := make(chan item, o.cfg.BatchSize)
	go func() {
		defer close(items)
		dec := newWireDecoder()
		var msg wireMsg
		for {
			err := st.RecvMsg(&msg)
			var it item
			if err == nil {
				o.stats.Read()
				rec, cerr := dec.Decode(msg.b)
				if errors.Is(cerr, ErrNoFlow) {
					o.stats.Skip()
					continue
				}
				if cerr == nil {
					cerr = o.cfg.Window.Check(rec.Time)
				}
				if cerr != nil {
					o.stats.Reject(RejectReason(cerr), fmt.Sprintf("%s: %v", o.cfg.Addr, cerr))
					continue
				}
				it = item{rec: rec}
			} else {
				it.err = err
			}
			select {
			case items <- it:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	batch := make([]schema.Flow, 0, o.cfg.BatchSize)
	delivered := 0
	flush := func() error {
		if err := ingest.Deliver(ctx, o.sink, o.stats, batch...); err != nil {
			// Not accepted: the resume point stays before these flows, and
			// the next stream asks for them again.
			return fmt.Errorf("sink refused %d flows: %w", len(batch), err)
		}
		o.accepted(batch)
		delivered += len(batch)
		batch = batch[:0]
		return nil
	}
	linger := time.NewTimer(o.cfg.BatchLinger)
	defer linger.Stop()
	for {
		select {
		case <-ctx.Done():
			return delivered, errors.Join(flush(), ctx.Err())
		case <-linger.C:
			if err := flush(); err != nil {
				return delivered, err
			}
			linger.Reset(o.cfg.BatchLinger)
		case it, ok := <-items:
			if !ok {
				return delivered, flush()
			}
			if it.err != nil {
				ferr := flush()
				if errors.Is(it.err, io.EOF) {
					return delivered, errors.Join(ferr, errors.New("server closed the stream"))
				}
				return delivered, errors.Join(ferr, it.err)
			}
			rec := it.rec
			if rec.Time.Equal(since) {
				if i := indexEqual(repeats, &rec); i >= 0 {
					repeats = append(repeats[:i], repeats[i+1:]...)
					o.stats.Skip()
					continue
				}
			}
			if len(stored) > 0 && !rec.Time.After(storedUntil) {
				if k := schema.FlowKey(&rec); stored[k] > 0 {
					stored[k]--
					o.stats.Skip()
					continue
				}
			}
			batch = append(batch, rec)
			if len(batch) == cap(batch) {
				if err := flush(); err != nil {
					return delivered, err
				}
			}
		}
	}
}

// accepted moves the resume point over flows the sink took: a resumed
// stream starts at the time of the newest accepted flow, so the flows at
// exactly that time come again and are dropped then (with multiplicity: two
// identical flows recorded twice are both kept). A live stream is never
// deduplicated. Flows are told apart by their records: two flows that
// differ only in what is not stored are one row each either way.
func (o *Observer) accepted(batch []schema.Flow) {
	newest := o.last
	for i := range batch {
		if batch[i].Time.After(newest) {
			newest = batch[i].Time
		}
	}
	if newest.After(o.last) {
		o.last = newest
		o.lastSeen.Store(newest.UnixNano())
		o.atLast = o.atLast[:0]
		if newest.After(o.resumeUntil) {
			// Flows stored before this process started are all older now.
			o.resumeKeys = nil
		}
	}
	for i := range batch {
		if batch[i].Time.Equal(o.last) {
			o.atLast = append(o.atLast, batch[i])
		}
	}
}

// indexEqual finds f among fs.
func indexEqual(fs []schema.Flow, f *schema.Flow) int {
	for i := range fs {
		if reflect.DeepEqual(&fs[i], f) {
			return i
		}
	}
	return -1
}
