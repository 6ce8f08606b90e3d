package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeBackend answers with err (when set) and records what reached it.
// Methods the tests do not call are left to the embedded nil interface.
type fakeBackend struct {
	Backend
	err     error
	calls   []string
	minConf int32
}

func (b *fakeBackend) Status(context.Context) (Status, error) {
	b.calls = append(b.calls, "status")
	return Status{PeerID: "me"}, b.err
}

func (b *fakeBackend) Job(_ context.Context, id string) (*contract.JobStatus, error) {
	b.calls = append(b.calls, "job "+id)
	return nil, b.err
}

func (b *fakeBackend) Submit(_ context.Context, req contract.Request) (string, error) {
	b.calls = append(b.calls, "submit")
	return "j1", b.err
}

func (b *fakeBackend) Market(_ context.Context, req MarketRequest) ([]Offer, error) {
	b.calls = append(b.calls, "market")
	return nil, b.err
}

func (b *fakeBackend) WalletBalance(_ context.Context, minConf int32) (Balance, error) {
	b.calls = append(b.calls, "balance")
	b.minConf = minConf
	return Balance{Spendable: 5}, b.err
}

func (b *fakeBackend) Score(context.Context, peer.ID) (reputation.Score, error) {
	b.calls = append(b.calls, "score")
	return reputation.Score{}, b.err
}

func (b *fakeBackend) SetTrust(context.Context, peer.ID, float64) error {
	b.calls = append(b.calls, "trust")
	return b.err
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve starts a server for b on a fresh data dir and returns a client.
func serve(t *testing.T, b Backend) (*Client, string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bbapi") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := Listen(dir, b, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return NewClient(dir), dir
}

// TestErrorCategoriesRoundTrip: a category the backend returns reaches the
// client as the same category (the client used to drop "bad request").
func TestErrorCategoriesRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		err      error
		category error
	}{
		{fmt.Errorf("%w: job x", ErrNotFound), ErrNotFound},
		{fmt.Errorf("%w: buying needs payments", ErrUnavailable), ErrUnavailable},
		{fmt.Errorf("%w: minconf", ErrBadRequest), ErrBadRequest},
		{fmt.Errorf("%w: no command", contract.ErrInvalid), ErrBadRequest},
	} {
		b := &fakeBackend{err: tt.err}
		c, _ := serve(t, b)
		_, err := c.Status(context.Background())
		if !errors.Is(err, tt.category) {
			t.Errorf("backend error %q reached the client as %v, want category %v", tt.err, err, tt.category)
		}
		if strings.Count(err.Error(), tt.category.Error()) != 1 || !strings.Contains(err.Error(), strings.SplitN(tt.err.Error(), ": ", 2)[1]) {
			t.Errorf("client error text %q: want the category once and the server's reason", err)
		}
	}
	b := &fakeBackend{err: errors.New("disk on fire")}
	c, _ := serve(t, b)
	_, err := c.Status(context.Background())
	if err == nil || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("internal error reached the client as %v", err)
	}
}

// TestBadRequests: malformed bodies, peer IDs and parameters are refused
// with 400 before the backend sees them.
func TestBadRequests(t *testing.T) {
	b := &fakeBackend{}
	h := Handler(b, quiet())
	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/v1/jobs", "{not json"},
		{"POST", "/v1/jobs", `{"duration": "soon"}`},
		{"POST", "/v1/market", "[1,2"},
		{"GET", "/v1/wallet/balance?minconf=lots", ""},
		{"GET", "/v1/wallet/balance?minconf=99999999999", ""},
		{"GET", "/v1/reputation/not-a-peer", ""},
		{"PUT", "/v1/trust/not-a-peer", `{"weight": 1}`},
		{"PUT", "/v1/trust/12D3KooWLnCzuKCA6jrvPaXhLU4iX8YZ8BVLuRXhAPfrcHTD4RYf", "{"},
	} {
		req, _ := http.NewRequest(tt.method, "http://blackbox"+tt.path, strings.NewReader(tt.body))
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, req)
		if rec.code != http.StatusBadRequest || !strings.Contains(rec.body.String(), `"error"`) {
			t.Errorf("%s %s %q: %d %s", tt.method, tt.path, tt.body, rec.code, rec.body.String())
		}
		if got := statusError(rec.code, "x"); !errors.Is(got, ErrBadRequest) {
			t.Errorf("client reads 400 as %v", got)
		}
	}
	if len(b.calls) != 0 {
		t.Errorf("bad requests reached the backend: %v", b.calls)
	}
	// Well-formed ones do reach it, with their parameters.
	c, _ := serve(t, b)
	if bal, err := c.WalletBalance(context.Background(), 0); err != nil || bal.Spendable != 5 || b.minConf != 0 {
		t.Errorf("balance: %+v, %v, minconf %d", bal, err, b.minConf)
	}
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}
func (r *recorder) WriteHeader(code int) { r.code = code }

// TestListen: no daemon is ErrNoDaemon; a stale socket left by a crash is
// replaced; a second daemon on a live socket is refused.
func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "bbapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := NewClient(dir).Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: %v", err)
	}
	// A socket file nobody listens on, as a killed daemon leaves it.
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	srv, err := Listen(dir, &fakeBackend{}, quiet())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer srv.Close()
	if s, err := NewClient(dir).Status(context.Background()); err != nil || s.PeerID != "me" {
		t.Errorf("status: %+v %v", s, err)
	}
	if _, err := Listen(dir, &fakeBackend{}, quiet()); err == nil || !strings.Contains(err.Error(), "another blackbox daemon") {
		t.Errorf("second daemon: %v", err)
	}
}

// TestSocketModeIsTheAuth: the socket is 0600, so another user cannot talk
// to the daemon even where it can reach the socket file. Runs the dial as
// uid 65534 in a child process; needs root.
func TestSocketModeIsTheAuth(t *testing.T) {
	dialAs := childDialer(t)
	c, dir := serve(t, &fakeBackend{})
	st, err := os.Stat(SocketPath(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode(), err)
	}
	// Let the other user reach the socket file, so only its mode decides.
	os.Chmod(dir, 0o755)
	if out, err := dialAs(dir, 65534, 65534); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("uid 65534 could use the 0600 socket: %v: %s", err, out)
	}
	if out, err := dialAs(dir, 0, 0); err != nil || !strings.Contains(out, "status ok") {
		t.Errorf("the owner could not use the socket: %v: %s", err, out)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestSocketGroup: with WithGroup the group's members may use the socket,
// and other users still may not.
func TestSocketGroup(t *testing.T) {
	dialAs := childDialer(t)
	dir, err := os.MkdirTemp("/tmp", "bbapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := Listen(dir, &fakeBackend{}, quiet(), WithGroup("no-such-group-here")); err == nil || !strings.Contains(err.Error(), "socket_group") {
		t.Errorf("unknown group: %v", err)
	}
	srv, err := Listen(dir, &fakeBackend{}, quiet(), WithGroup("nogroup"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for path, want := range map[string]os.FileMode{dir: 0o710, SocketPath(dir): 0o660} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != want || st.Sys().(*syscall.Stat_t).Gid != 65534 {
			t.Errorf("%s: %v %v; want mode %v, group nogroup", path, st.Mode(), err, want)
		}
	}
	if out, err := dialAs(dir, 65534, 65534); err != nil || !strings.Contains(out, "status ok") {
		t.Errorf("a member of the group could not use the socket: %v: %s", err, out)
	}
	if out, err := dialAs(dir, 65533, 65533); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("a user outside the group could use the socket: %v: %s", err, out)
	}
}

// childDialer returns a function that makes one status call to the daemon
// of a data dir from a child process running as uid:gid. Needs root.
func childDialer(t *testing.T) func(dir string, uid, gid uint32) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI")
		}
		t.Skip("needs root to dial as another user")
	}
	// The test binary may sit in a directory only root can read: copy it
	// where anyone may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := os.MkdirTemp("", "bbapibin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "apitest")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return func(dir string, uid, gid uint32) (string, error) {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "BLACKBOX_API_DIAL="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// TestMain runs the child half of TestSocketModeIsTheAuth: one status call
// to the daemon of BLACKBOX_API_DIAL, as whatever user it was started as.
func TestMain(m *testing.M) {
	if dir := os.Getenv("BLACKBOX_API_DIAL"); dir != "" {
		_, err := NewClient(dir).Status(context.Background())
		if err != nil {
			fmt.Println("status failed:", err, rawDialErr(dir))
			os.Exit(1)
		}
		fmt.Println("status ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rawDialErr is the operating system's reason the socket cannot be used.
func rawDialErr(dir string) error {
	c, err := net.Dial("unix", SocketPath(dir))
	if err == nil {
		c.Close()
	}
	return err
}
