//go:build race

package flush

// raceEnabled: the race detector slows the flush's CPU work several
// times over, the fsyncs it is measured against not at all.
const raceEnabled = true
