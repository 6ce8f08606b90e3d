package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"},
		{4 * time.Second, "just now"},
		{42 * time.Second, "42 s ago"},
		{3*time.Minute + 59*time.Second, "3 min ago"},
		{2*time.Hour + 10*time.Minute, "2 h ago"},
		{47 * time.Hour, "47 h ago"},
		{5 * 24 * time.Hour, "5 d ago"},
		{-3 * time.Minute, "in 3 min"},
	} {
		if got := ago(now, now.Add(-tc.d)); got != tc.want {
			t.Errorf("ago(-%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := ago(now, time.Time{}); got != "-" {
		t.Errorf("ago(zero) = %q, want -", got)
	}
	if got := ago(now, now.AddDate(0, -3, 0)); got != now.AddDate(0, -3, 0).Local().Format(time.DateOnly) {
		t.Errorf("ago(3 months) = %q, want the date", got)
	}
}

func TestSats(t *testing.T) {
	for n, want := range map[int64]string{0: "0 sat", 999: "999 sat", 1234: "1,234 sat", 1234567: "1,234,567 sat", -50: "-50 sat", -1000: "-1,000 sat"} {
		if got := sats(n); got != want {
			t.Errorf("sats(%d) = %q, want %q", n, got, want)
		}
	}
	for f, want := range map[float64]string{0: "0 sat", 0.25: "0.25 sat", 1234.5: "1,234.5 sat", 2.999: "3 sat", 7: "7 sat"} {
		if got := fracSats(f); got != want {
			t.Errorf("fracSats(%v) = %q, want %q", f, got, want)
		}
	}
}

// noTrailingSpace fails when a line of out ends in a space or holds an ESC.
func noTrailingSpace(t *testing.T, out string) {
	t.Helper()
	for i, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, " ") || strings.HasSuffix(l, "\t") {
			t.Errorf("line %d ends in a space: %q", i+1, l)
		}
		if strings.ContainsRune(l, 0x1b) {
			t.Errorf("line %d holds an ESC: %q", i+1, l)
		}
	}
}

func TestTableAlignsWithoutTrailingSpaces(t *testing.T) {
	var b bytes.Buffer
	tb := newTable(&b, "A", "LONGER", "C")
	tb.row("xxxx", "", "")
	tb.row("y", "z", "last")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "A     LONGER  C\nxxxx\ny     z       last\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	// Written as tab-separated lines, as to a tabwriter: a long single
	// cell does not widen the first column.
	b.Reset()
	tb = newTable(&b)
	b2 := "Job:\tabc\nState:\tfailed \nAddresses:\n  /ip4/127.0.0.1/tcp/7460/p2p/12D3KooWLongLongLong\n"
	tb.Write([]byte(b2))
	tb.Flush()
	want = "Job:    abc\nState:  failed\nAddresses:\n  /ip4/127.0.0.1/tcp/7460/p2p/12D3KooWLongLongLong\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

// A seller's reason with an ANSI escape or a newline stays one harmless
// line.
func TestTableEscapesControlCharacters(t *testing.T) {
	var b bytes.Buffer
	tb := newTable(&b, "WHY")
	tb.row("\x1b[31mred\x1b[0m\nsecond line\xff")
	tb.Flush()
	want := "WHY\n\\x1b[31mred\\x1b[0m\\nsecond line\\xff\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestPrintJobs(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	jobs := []*contract.JobStatus{
		{ID: "1111aaaa", State: contract.JobFailed, Created: now.Add(-3 * time.Hour), Paid: 0,
			Request: contract.Request{Command: []string{"echo", "old"}}, Error: "no seller offers 64 cores"},
		{ID: "2222bbbb", State: contract.JobDone, Created: now.Add(-3 * time.Minute), Paid: 1234, ExitCode: 3,
			Receipt: &contract.Receipt{ExitCode: 3}, Request: contract.Request{Command: []string{"sh", "-c", "exit 3"}}},
		{ID: "3333cccc", State: contract.JobRunning, Phase: "fund", Created: now.Add(-time.Second)},
	}
	var b bytes.Buffer
	if err := printJobs(&b, now, jobs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	noTrailingSpace(t, out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 jobs, got:\n%s", out)
	}
	for i, id := range []string{"3333cccc", "2222bbbb", "1111aaaa"} {
		if !strings.HasPrefix(lines[i+1], id) {
			t.Errorf("line %d: want job %s (newest first), got %q", i+2, id, lines[i+1])
		}
	}
	for _, want := range []string{"running (fund)", "just now", "3 min ago", "3 h ago", "1,234 sat", "no seller offers 64 cores"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	// The job that failed before it ran has no exit code.
	exitCol := strings.Index(lines[0], "EXIT")
	if got := strings.Fields(lines[3][exitCol:])[0]; got != "-" {
		t.Errorf("failed job's EXIT = %q, want -:\n%s", got, out)
	}
	if got := strings.Fields(lines[2][exitCol:])[0]; got != "3" {
		t.Errorf("done job's EXIT = %q, want 3:\n%s", got, out)
	}
}

func TestPrintContractsAndChannels(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	err := printContracts(&b, now, api.Contracts{
		Contracts: []*contract.Record{
			{ID: "c-old", State: contract.StateSettled, Paid: 1500, Updated: now.Add(-2 * time.Hour)},
			{ID: "c-new", State: contract.StateRunning, Paid: 20, Updated: now.Add(-10 * time.Second)},
		},
		EarnedSats: map[string]int64{"settled": 1500, "running": 20},
		Rejections: map[string]uint64{"capacity": 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	noTrailingSpace(t, out)
	if strings.Index(out, "c-new") > strings.Index(out, "c-old") {
		t.Errorf("want newest first:\n%s", out)
	}
	for _, want := range []string{"1,500 sat", "10 s ago", "2 h ago", "Earned:   1,520 sat (running 20 sat, settled 1,500 sat)", "Refused:  capacity 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}

	chans := []*payment.Channel{{ID: "aa:0", OpenHeight: 100, Capacity: 100000}, {ID: "bb:1", OpenHeight: 205, Capacity: 5000, Paid: 1200}}
	sortChannels(chans)
	var views []channelView
	for _, ch := range chans {
		views = append(views, channelView{ID: ch.ID, Role: "buyer", State: "open", Capacity: ch.Capacity, Paid: ch.Paid, Expiry: 300})
	}
	b.Reset()
	if err := printChannels(&b, views); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	noTrailingSpace(t, out)
	if strings.Index(out, "bb:1") > strings.Index(out, "aa:0") {
		t.Errorf("want the newest channel first:\n%s", out)
	}
	for _, want := range []string{"100,000 sat", "1,200 sat", "block 300"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

// A job whose first seller was unreachable and whose receipt billed
// bytes moved says both in `jobs` (WHY), `job` and submit's summary.
func TestJobsShowUnreachableAndEgress(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	j := &contract.JobStatus{ID: "4444dddd", State: contract.JobDone, Created: now.Add(-time.Minute), Paid: 1690,
		Request: contract.Request{Command: []string{"head", "-c", "5242880", "/dev/zero"}},
		Attempts: []contract.Attempt{
			{Seller: "hidden", State: contract.StateExpired, Reason: contract.ReasonUnreachable, Fault: contract.FaultUnreachable},
			{Seller: "direct", State: contract.StateSettled, Paid: 1690},
		},
		Receipt: &contract.Receipt{Billed: 1690, Intervals: 1, EgressBytes: 5 << 20, Egress: 488}}
	var b bytes.Buffer
	if err := printJobs(&b, now, []*contract.JobStatus{j}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 seller(s) unreachable, nothing funded", "moved 5MiB billed 488 sat"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("jobs: missing %q in\n%s", want, b.String())
		}
	}
	b.Reset()
	summarize(&b, j, "res")
	for _, want := range []string{"unreachable: accepted, but no connection could carry the contract", "5MiB moved (488 sat)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary: missing %q in\n%s", want, b.String())
		}
	}
}
