package sandbox

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// A job's stdout and stderr do not go through the daemon's pipes: the
// containerd shim hands them to a logger process of its own (containerd's
// "binary" IO: the shim starts it with the streams' read ends as fds 3 and
// 4 and waits for fd 5 to close), which writes them to files in the job's
// directory. The logger is this program run again (Config.LogBinary, and
// IsLogger/LoggerMain in its main). It lives as long as the task, not the
// daemon: output written while the daemon is down (a crash, an upgrade) is
// kept, and the daemon that re-attaches (Reattach) reads the files from the
// start. The files are capped like the streams were (Job.OutputCap); what
// is cut is counted. When both streams end, the logger writes doneFile with
// the two totals: after it, the files do not change.

// Logger arguments. containerd passes the binary URI's query as key and
// value pairs in no fixed order.
const (
	loggerFlag    = "--blackbox-sandbox-log" // value: the directory of the files
	loggerCapFlag = "--blackbox-sandbox-log-cap"
)

// Log files in a job's log directory.
const (
	logStdout = "stdout"
	logStderr = "stderr"
	doneFile  = "done" // "<stdout bytes> <stderr bytes>\n", written last
)

// IsLogger reports whether this process was started by a containerd shim
// as a job's logger (see LoggerMain). A main calls it first.
func IsLogger() bool {
	if os.Getenv("CONTAINER_ID") == "" {
		return false
	}
	_, ok := loggerArgs(os.Args[1:])[loggerFlag]
	return ok
}

func loggerArgs(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(args); i += 2 {
		m[args[i]] = args[i+1]
	}
	return m
}

// LoggerMain runs the job logger: it copies fd 3 (stdout) and fd 4
// (stderr) into the files of its directory, each up to its cap, until both
// end, writes the totals and returns the exit code. SIGTERM (the shim's
// when the task is deleted) does not stop it before the streams end: they
// end when the job's last process does.
func LoggerMain() int {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	args := loggerArgs(os.Args[1:])
	dir := args[loggerFlag]
	capBytes, err := strconv.ParseInt(args[loggerCapFlag], 10, 64)
	ready := os.NewFile(5, "ready")
	if err != nil || capBytes <= 0 || !filepath.IsAbs(dir) {
		fmt.Fprintf(os.Stderr, "blackbox job logger: bad arguments %q\n", os.Args[1:])
		ready.Close()
		return 2
	}
	var totals [2]int64
	var files [2]*os.File
	for i, name := range []string{logStdout, logStderr} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "blackbox job logger: %v\n", err)
			ready.Close()
			return 1
		}
		files[i] = f
	}
	ready.Close()
	var wg sync.WaitGroup
	for i, fd := range []uintptr{3, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := os.NewFile(fd, "stream")
			totals[i] = copyCapped(files[i], in, capBytes)
			in.Close()
			files[i].Close()
		}()
	}
	wg.Wait()
	tmp := filepath.Join(dir, doneFile+".tmp")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", totals[0], totals[1]), 0o600); err != nil {
		return 1
	}
	if err := os.Rename(tmp, filepath.Join(dir, doneFile)); err != nil {
		return 1
	}
	return 0
}

// copyCapped copies r to w until r ends, writing at most capBytes, and
// returns what r gave in all. A failing w drops the rest: the job must
// never block on its logger.
func copyCapped(w io.Writer, r io.Reader, capBytes int64) int64 {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if room := capBytes - n; room > 0 {
				if _, werr := w.Write(buf[:min(int64(k), room)]); werr != nil {
					w = io.Discard
				}
			}
			n += int64(k)
		}
		if err != nil {
			return n
		}
	}
}

// readDone reads a log directory's totals; ok is false until the logger
// has finished.
func readDone(dir string) (stdout, stderr int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, doneFile))
	if err != nil {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(string(b), "%d %d", &stdout, &stderr); err != nil {
		return 0, 0, false
	}
	return stdout, stderr, true
}
