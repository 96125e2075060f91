package embedded

import (
	"testing"
	"time"
)

// TestRestartDelayBacksOffWithJitter: the pause doubles with each restart
// in a row, stops at the cap, and is drawn from the upper half of it.
func TestRestartDelayBacksOffWithJitter(t *testing.T) {
	base, max := time.Second, time.Minute
	lo := func() float64 { return 0 }
	hi := func() float64 { return 0.999999 }
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for n, d := range want {
		if got := restartDelay(n, base, max, lo); got != d/2 {
			t.Errorf("restart %d, least jitter: %s, want %s", n+1, got, d/2)
		}
		if got := restartDelay(n, base, max, hi); got < d-time.Millisecond || got > d {
			t.Errorf("restart %d, most jitter: %s, want about %s", n+1, got, d)
		}
	}
	if got := restartDelay(1000, base, max, hi); got > max {
		t.Errorf("restart 1001 waits %s, past the cap %s", got, max)
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[restartDelay(3, base, max, randFloat)] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 delays drawn with real randomness are all equal: no jitter")
	}
}
