//go:build race

package enforcer

// raceOn: the race detector slows the pairwise oracle tenfold.
const raceOn = true
