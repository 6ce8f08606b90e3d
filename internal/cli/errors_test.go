package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

// failingBackend answers the buyer's calls with the errors the node gives
// (internal/node: notFound, needBuyer, precheck), to see what the user
// reads. It embeds a nil api.Backend only to satisfy the interface: a call
// this test does not expect panics, which fails the test.
type failingBackend struct {
	api.Backend
	submitErr error
}

func (f failingBackend) Job(_ context.Context, id string) (*contract.JobStatus, error) {
	return nil, fmt.Errorf("%w: %v", api.ErrNotFound, fmt.Errorf("job %s: %w", id, contract.ErrNotFound))
}

func (f failingBackend) Cancel(_ context.Context, id string) error {
	_, err := f.Job(context.Background(), id)
	return err
}

func (f failingBackend) Jobs(context.Context) ([]*contract.JobStatus, error) {
	return nil, nil
}

func (f failingBackend) Submit(context.Context, contract.Request) (string, error) {
	return "", f.submitErr
}

// repeatedPrefix returns a part of msg (between ": ") said twice, as in
// "not found: not found: …" or "fund: fund:".
func repeatedPrefix(msg string) string {
	seen := map[string]bool{}
	for _, part := range strings.Split(strings.TrimSpace(msg), ": ") {
		if seen[part] {
			return part
		}
		seen[part] = true
	}
	if strings.Count(msg, "not found") > 1 {
		return "not found"
	}
	return ""
}

// TestErrorsSaidOnce: the CLI's error paths against a daemon say each
// thing once, and exit 1 (a failure) or 2 (a usage error).
func TestErrorsSaidOnce(t *testing.T) {
	if repeatedPrefix("open channel: fund: fund: insufficient funds") != "fund" || repeatedPrefix("not found: job x: contract not found") == "" {
		t.Fatal("repeatedPrefix misses a repeat")
	}
	dir := t.TempDir()
	noOffer := &contract.NoOfferError{Miss: contract.MissPrice, Offers: 1, MaxPrice: 10, Cheapest: "", CheapestSat: 13001, StartFeeSat: 1000}
	srv, err := api.Listen(dir, failingBackend{submitErr: fmt.Errorf("%w: %w", api.ErrRefused, noOffer)}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"job", "abc"}, 1, "no job \"abc\": `blackbox jobs` lists them"},
		{[]string{"job", "abc", "--logs", "--follow"}, 1, "no job \"abc\""},
		{[]string{"cancel", "abc"}, 1, "no job \"abc\""},
		{[]string{"results", "abc", "-o", t.TempDir()}, 1, "no job \"abc\""},
		{[]string{"submit", "--image", "docker.io/library/busybox:1.36", "--", "true"}, 1, noOffer.Error()},
		{[]string{"submit", "--json", "--image", "docker.io/library/busybox:1.36", "--", "true"}, 1, `{"event":"error",`},
		{[]string{"submit", "--cpus", "abc", "--image", "x", "--", "true"}, 2, `--cpus "abc"`},
		{[]string{"submit", "--max-price", "abc", "--", "true"}, 2, `invalid argument "abc" for "--max-price"`},
		{[]string{"submit", "--image", "docker.io/library/busybox:1.36"}, 2, "requires at least 1 arg"},
		{[]string{"jobs", "--state", "bogus"}, 2, "want one of searching, running, done, failed, cancelled"},
		{[]string{"nosuch"}, 2, `unknown command "nosuch"`},
		{[]string{"job"}, 2, "accepts 1 arg"},
	} {
		code, out, errOut := run(t, append([]string{"--data-dir", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%v: exit %d, %q%q; want exit %d saying %q", tc.args, code, out, errOut, tc.code, tc.want)
		}
		if r := repeatedPrefix(errOut); r != "" {
			t.Errorf("%v: %q says %q twice", tc.args, errOut, r)
		}
	}
	if !errors.Is(noOffer, contract.ErrNoOffer) {
		t.Error("a NoOfferError is not an ErrNoOffer")
	}
}
