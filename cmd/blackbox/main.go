// Command blackbox is the compute-market node: one binary for the seller's
// daemon, the buyer's CLI and the operator's tools. All logic lives in
// internal/cli and the packages it drives.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/blackbox-market/blackbox/internal/cli"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

func main() {
	if sandbox.IsLogger() { // a job's logger, run by the containerd shim
		os.Exit(sandbox.LoggerMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile()
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}
