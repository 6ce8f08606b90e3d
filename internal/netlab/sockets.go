package netlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// enter runs f on an OS thread that has entered the host's network namespace.
// Sockets made there stay in that namespace after f returns; the thread is
// never unlocked, so it dies with its goroutine and no other goroutine
// ever runs in the wrong namespace.
func (h *Host) enter(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := os.Open(filepath.Join("/run/netns", h.NS))
		if err != nil {
			errc <- err
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.NS, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Dial opens a connection from inside the host.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return within(h, func() (net.Conn, error) { return d.DialContext(ctx, network, addr) })
}

// Listen listens inside the host (TCP).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	return within(h, func() (net.Listener, error) { return net.Listen(network, addr) })
}

// ListenPacket opens a packet socket (UDP) inside the host.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	return within(h, func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
}

// within makes a socket inside the host's namespace (it stays there).
func within[T any](h *Host, open func() (T, error)) (T, error) {
	var v T
	err := h.enter(func() (err error) {
		v, err = open()
		return err
	})
	return v, err
}

// Expose makes a TCP service of the test process's own namespace (target,
// e.g. a btcd on 127.0.0.1) reachable at the host's IP and port: the test
// process listens inside the host and copies each connection to target.
// It returns host:port and stops at the test's cleanup.
func (h *Host) Expose(port int, target string) string {
	t := h.in.t
	t.Helper()
	l, err := h.Listen("tcp", net.JoinHostPort(h.IP.String(), fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("netlab: expose %s on %s: %v", target, h.Name, err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.DialTimeout("tcp", target, 10*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				fin := make(chan struct{})
				go func() {
					select {
					case <-done:
						c.Close()
						u.Close()
					case <-fin:
					}
				}()
				pipe(c, u)
				close(fin)
			}()
		}
	}()
	return l.Addr().String()
}

// pipe copies both ways until either side ends.
func pipe(a, b net.Conn) {
	errc := make(chan error, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		errc <- err
	}
	go cp(a, b)
	go cp(b, a)
	<-errc
	<-errc
}
