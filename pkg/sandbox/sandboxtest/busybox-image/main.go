// Command busybox-image writes the sandboxtest busybox image tarball, for
// demos and manual runs of `blackbox sandbox run`:
//
//	go run ./pkg/sandbox/sandboxtest/busybox-image [-oci] job.tar
//
// It prints the tarball's digest (sha256:<hex>) for --digest.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

func main() {
	oci := flag.Bool("oci", false, "write an OCI layout instead of a docker archive")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: busybox-image [-oci] FILE")
		os.Exit(2)
	}
	format := sandboxtest.DockerArchive
	if *oci {
		format = sandboxtest.OCILayout
	}
	b, err := sandboxtest.BusyboxImage(format)
	if err == nil {
		err = os.WriteFile(flag.Arg(0), b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "busybox-image:", err)
		os.Exit(1)
	}
	fmt.Println(sandboxtest.Digest(b))
}
