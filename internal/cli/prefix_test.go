package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

func TestResolvePrefix(t *testing.T) {
	ids := []string{"abc123", "abd456", "ff00", "abc123"}
	for _, tc := range []struct {
		in, want, err string
		notFound      bool
	}{
		{in: "ff00", want: "ff00"},
		{in: "f", want: "ff00"},
		{in: "abc", want: "abc123"},
		{in: "ab", err: `job ID "ab" is ambiguous: 2 jobs start with it (abc123, abd456); give more of it`},
		{in: "zz", err: "no job \"zz\": `blackbox jobs` lists them", notFound: true},
		{in: "", err: "empty job ID"},
	} {
		got, err := resolvePrefix("job", "blackbox jobs", tc.in, ids)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
		}
		if errors.Is(err, api.ErrNotFound) != tc.notFound {
			t.Errorf("%q: errors.Is(ErrNotFound) = %v", tc.in, !tc.notFound)
		}
	}
}

// jobsBackend serves a fixed list of jobs and records cancels.
type jobsBackend struct {
	api.Backend
	jobs      []*contract.JobStatus
	cancelled []string
}

func (b *jobsBackend) Jobs(context.Context) ([]*contract.JobStatus, error) { return b.jobs, nil }

func (b *jobsBackend) Job(_ context.Context, id string) (*contract.JobStatus, error) {
	for _, j := range b.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return nil, api.ErrNotFound
}

func (b *jobsBackend) Cancel(_ context.Context, id string) error {
	b.cancelled = append(b.cancelled, id)
	return nil
}

// TestJobCommandsTakeAPrefix: job, results and cancel accept a unique
// prefix of a job ID; an ambiguous one lists the candidates, an unknown one
// says where the IDs are, and neither reaches the daemon's job calls.
func TestJobCommandsTakeAPrefix(t *testing.T) {
	now := time.Now()
	b := &jobsBackend{jobs: []*contract.JobStatus{
		{ID: "5f3a000011112222", State: contract.JobFailed, Created: now, Error: "no offers"},
		{ID: "5f3b000011112222", State: contract.JobRunning, Created: now},
		{ID: "9c00000011112222", State: contract.JobDone, Created: now},
	}}
	data := fakeDaemon(t, b)
	code, out, errOut := run(t, "--data-dir", data, "job", "5f3a")
	if code != 0 || !strings.Contains(out, "5f3a000011112222") || !strings.Contains(out, "no offers") {
		t.Fatalf("job 5f3a: exit %d\n%s%s", code, out, errOut)
	}
	noTrailingSpace(t, out)
	code, _, errOut = run(t, "--data-dir", data, "cancel", "5f")
	if code == 0 || !strings.Contains(errOut, "5f3a000011112222, 5f3b000011112222") {
		t.Fatalf("cancel 5f: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = run(t, "--data-dir", data, "results", "77", "--out", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "`blackbox jobs` lists them") {
		t.Fatalf("results 77: exit %d, stderr %q", code, errOut)
	}
	if len(b.cancelled) != 0 {
		t.Fatalf("an ambiguous prefix cancelled %v", b.cancelled)
	}
	if code, out, errOut = run(t, "--data-dir", data, "cancel", "9c"); code != 0 || !strings.Contains(out, "9c00000011112222") {
		t.Fatalf("cancel 9c: exit %d\n%s%s", code, out, errOut)
	}
	if len(b.cancelled) != 1 || b.cancelled[0] != "9c00000011112222" {
		t.Fatalf("cancelled %v, want the full ID", b.cancelled)
	}
}

// TestPeerArgsTakeAPrefix: reputation and trust take a unique prefix of a
// known peer; a prefix of no known peer asks for the full ID.
func TestPeerArgsTakeAPrefix(t *testing.T) {
	dir := t.TempDir()
	p := testPeer(t)
	if code, _, errOut := run(t, "--data-dir", dir, "trust", "add", p, "--weight", "0.5"); code != 0 {
		t.Fatalf("trust add: %s", errOut)
	}
	prefix := p[:len(p)-6]
	if code, out, errOut := run(t, "--data-dir", dir, "reputation", prefix); code != 0 || !strings.Contains(out, p) {
		t.Fatalf("reputation %s: exit %d\n%s%s", prefix, code, out, errOut)
	}
	code, _, errOut := run(t, "--data-dir", dir, "trust", "rm", "12D3KooWnobody")
	if code == 0 || !strings.Contains(errOut, "give its full peer ID") {
		t.Fatalf("trust rm unknown: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t, "--data-dir", dir, "trust", "rm", prefix); code != 0 {
		t.Fatalf("trust rm %s: %s", prefix, errOut)
	}
	if _, out, _ := run(t, "--data-dir", dir, "trust", "ls"); strings.Contains(out, p) {
		t.Fatalf("trust rm by prefix left the edge:\n%s", out)
	}
}
