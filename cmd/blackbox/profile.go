package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// profileEnv names a file the process writes its CPU profile to, for
// finding where a command or the daemon spends its CPU (a debugging aid,
// not a setting: `%p` in it becomes the process id and `%c` the command,
// so that concurrent commands write one file each). Read with `go tool
// pprof`.
const profileEnv = "BLACKBOX_DEBUG_CPUPROFILE"

// profileWindowEnv, a duration, cuts profileEnv's profile into windows of
// that length, each its own file (the path with "-N" appended, N from 1):
// where a long-lived daemon spends its CPU while idle, apart from its
// start.
const profileWindowEnv = "BLACKBOX_DEBUG_CPUPROFILE_WINDOW"

// startProfile starts the CPU profile profileEnv asks for and returns
// what stops and writes it.
func startProfile() (stop func()) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	path = strings.ReplaceAll(path, "%c", command(os.Args[1:]))
	window, _ := time.ParseDuration(os.Getenv(profileWindowEnv))
	if window <= 0 {
		f, err := beginProfile(path)
		if err != nil {
			return func() {}
		}
		return func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(window)
		defer t.Stop()
		for n := 1; ; n++ {
			f, err := beginProfile(fmt.Sprintf("%s-%d", path, n))
			if err != nil {
				return
			}
			select {
			case <-t.C:
			case <-done:
			}
			pprof.StopCPUProfile()
			f.Close()
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// beginProfile starts the CPU profile into a new file at path.
func beginProfile(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", profileEnv, err)
	}
	return f, err
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
