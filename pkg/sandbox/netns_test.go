//go:build integration

package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
)

// TestDialNetNS: a job's network namespace keeps its loopback up, and
// DialNetNS reaches a port there (busybox httpd on 127.0.0.1:8080 inside)
// while the job itself has no other interface; the daemon's own namespace
// is where every thread of the process is after the dials.
func TestDialNetNS(t *testing.T) {
	sb, img := newSandbox(t)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	pids := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *sandbox.Result, 1)
	var stderr strings.Builder
	go func() {
		res, err := sb.Run(ctx, sandbox.Job{Image: img, Limits: sandbox.Limits{CPUMillis: 500, MemoryBytes: 64 << 20, WallClock: time.Minute},
			Args:    []string{"sh", "-c", "mkdir -p /tmp/www && ip -o link > /tmp/www/links && echo hi > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"},
			Stderr:  &stderr,
			OnStart: func(pid int) { pids <- pid }})
		if err != nil {
			t.Errorf("run: %v", err)
		}
		done <- res
	}()
	pid := <-pids
	get := func(path string) (string, error) {
		c, err := sandbox.DialNetNS(ctx, pid, 8080)
		if err != nil {
			return "", err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	var body string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if body, err = get("/index.html"); err == nil {
			break
		}
	}
	if body != "hi\n" {
		t.Fatalf("GET through DialNetNS: %q, %v (stderr %q)", body, err, stderr.String())
	}
	links, err := get("/links")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the job's links: %q", links)
	if n := strings.Count(strings.TrimSpace(links), "\n") + 1; n != 1 || !strings.Contains(links, "lo:") || !strings.Contains(links, "UP") {
		t.Fatalf("the job's namespace should hold only lo, up: %q", links)
	}
	// Every thread of this process is back in its own namespace.
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && ns != self {
			t.Fatalf("thread %s is in %s after the dials, the process in %s", task.Name(), ns, self)
		}
	}
	cancel()
	if res := <-done; res != nil {
		assertNoTrace(t, sb, res.Container)
	}
}
