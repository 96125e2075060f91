// Command hubble is Cilium's Hubble CLI, unchanged: the same entry point as
// github.com/cilium/cilium/hubble's main package.
package main

import (
	"fmt"
	"os"

	"github.com/cilium/cilium/hubble/cmd"
)

func main() {
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
