package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// DialNetNS connects to 127.0.0.1:port inside the network namespace of
// process pid (a job's init process, Job.OnStart): a thread locked to the
// goroutine enters the namespace, creates and connects the socket there,
// and returns to the daemon's namespace. The socket stays in the job's
// namespace, so the job is reached on its own loopback and gets no other
// network path: no veth, no route, nothing in its namespace changes. A
// thread that cannot return to the daemon's namespace is never reused
// (the goroutine exits locked, and Go ends the thread).
func DialNetNS(ctx context.Context, pid int, port uint16) (net.Conn, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("dial job netns: bad pid %d", pid)
	}
	target, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		return nil, fmt.Errorf("dial job netns: %w", err)
	}
	defer target.Close()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("dial job netns: %w", err)}
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("dial job netns: setns: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}
