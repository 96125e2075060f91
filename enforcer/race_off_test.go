//go:build !race

package enforcer

const raceOn = false
