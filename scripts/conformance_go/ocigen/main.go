// ocigen prints the configuration that runtime-tools' generator makes for Linux
// (generate.New("linux"): hostname, mounts, capabilities, rlimits, namespaces and its
// default seccomp profile), the base of every isobox conformance test, as the upstream
// validation suite bases its tests on it.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/opencontainers/runtime-tools/generate"
)

func main() {
	g, err := generate.New("linux")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(g.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
