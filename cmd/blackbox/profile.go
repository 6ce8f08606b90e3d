package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// profileEnv names a file the process writes its CPU profile to, for
// finding where a command or the daemon spends its CPU (a debugging aid,
// not a setting: `%p` in it becomes the process id and `%c` the command,
// so that concurrent commands write one file each). Read with `go tool
// pprof`.
const profileEnv = "BLACKBOX_DEBUG_CPUPROFILE"

// startProfile starts the CPU profile profileEnv asks for and returns
// what stops and writes it.
func startProfile() (stop func()) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	path = strings.ReplaceAll(path, "%c", command(os.Args[1:]))
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", profileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// command is the first of args that looks like a command name (no
// slash, no leading dash), else "blackbox".
func command(args []string) string {
	for _, a := range args {
		if a != "" && !strings.HasPrefix(a, "-") && !strings.ContainsAny(a, "/=.") {
			return a
		}
	}
	return "blackbox"
}
