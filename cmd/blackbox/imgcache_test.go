//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/sandbox/sandboxtest"
)

// dataImage writes the busybox image with a /data file of size bytes made
// from seed into dir and returns its path.
func dataImage(t testing.TB, dir string, size int, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("data-%d.tar", seed))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandboxtest.WriteBusyboxImageWithData(f, sandboxtest.DockerArchive, size, seed); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// imageTransfer is what the seller's log says of a contract's image:
// the bytes it received (-1: none logged) and whether it said it held the
// image and asked for none.
func imageTransfer(t testing.TB, sellerLog, contractID string) (received int64, cached bool) {
	t.Helper()
	received = -1
	re := regexp.MustCompile(`msg="image received" .*contract=` + contractID + ` .*bytes=(\d+)`)
	if m := re.FindStringSubmatch(sellerLog); m != nil {
		received, _ = strconv.ParseInt(m[1], 10, 64)
	}
	cached = regexp.MustCompile(`msg="image cached, not transferred" .*contract=` + contractID).MatchString(sellerLog)
	return received, cached
}

// TestCachedImageNotSentAgain: two jobs with the same 4 MiB image to the
// same seller (real processes, containerd, btcd regtest): the first sends
// the image, the second none of it (job protocol 1.2.0), and both run with
// the right outputs. Then a buyer naming a digest its tarball is not (the
// tarball of the image the seller holds) is asked for the bytes, refused
// for a bad image, and nothing runs.
func TestCachedImageNotSentAgain(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	work := t.TempDir()
	const size = 4 << 20
	// A new image each run: the containerd may hold an earlier run's.
	image := dataImage(t, work, size, uint64(time.Now().UnixNano()))
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	flags := []string{"--cpus", "1", "--memory", "256MiB", "--time", "1m", "--max-price", "10000"}
	for i, word := range []string{"first", "second"} {
		out := filepath.Join(work, word)
		j := submit(t, buyer, image, out, flags, "sh", "-c", "echo "+word+" > /out/word; wc -c < /data")
		if j.State != contract.JobDone || j.ExitCode != 0 {
			t.Fatalf("%s job: %s exit %d: %s\n%s", word, j.State, j.ExitCode, j.Error, tail(seller.logs.String(), 30))
		}
		if b, err := os.ReadFile(filepath.Join(out, "out", "word")); err != nil || string(b) != word+"\n" {
			t.Fatalf("%s job: out/word %q, %v", word, b, err)
		}
		if b, err := os.ReadFile(filepath.Join(out, "stdout")); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(size) {
			t.Fatalf("%s job: stdout %q, %v; want the size of /data", word, b, err)
		}
		got, cached := imageTransfer(t, seller.logs.String(), j.ContractID)
		switch {
		case i == 0 && (got != st.Size() || cached):
			t.Fatalf("first job: the seller received %d image bytes (cached %v), want the whole tarball, %d", got, cached, st.Size())
		case i == 1 && (got != -1 || !cached):
			t.Fatalf("second job: the seller received %d image bytes (cached %v), want none", got, cached)
		}
		t.Logf("%s job: image bytes received by the seller: %d (cached: %v)", word, max(got, 0), cached)
	}

	// The lie: the tarball the seller holds, under another digest.
	lie := "sha256:" + strings.Repeat("ab", 32)
	b, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(buyer.dir, "blobs", lie[7:]), b, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := buyer.api().Submit(context.Background(), contract.Request{Image: lie, Command: []string{"sh", "-c", "echo ran"},
		Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 256 << 20}, Duration: time.Minute, MaxPrice: 10000})
	if err != nil {
		t.Fatalf("submit with a false digest: %v", err)
	}
	j := waitJob(t, buyer, id, 2*time.Minute, "to end", ended)
	if j.State == contract.JobDone || len(j.Attempts) == 0 {
		t.Fatalf("job with a false digest: %s, attempts %+v", j.State, j.Attempts)
	}
	cid := j.Attempts[0].ContractID
	got, cached := imageTransfer(t, seller.logs.String(), cid)
	// The seller asked for the bytes (it holds no image of the false
	// digest), hashed them and ran nothing.
	if got != st.Size() || cached {
		t.Fatalf("contract %s of the false digest: image bytes received %d, cached %v; want the tarball sent", cid, got, cached)
	}
	if rec := seller.contractRec(cid); rec == nil || !rec.Started.IsZero() || rec.State != contract.StateFailed {
		t.Fatalf("contract %s of the false digest: the seller's record %v", cid, rec)
	}
	if !regexp.MustCompile(`contract=` + cid + ` reason=bad_image .*buyer named ` + lie).MatchString(seller.logs.String()) {
		t.Fatalf("the seller did not refuse the false digest as a bad image:\n%s", tail(seller.logs.String(), 20))
	}
	if n := m.jobContainers(cid); n != 0 {
		t.Fatalf("%d containers for the refused contract", n)
	}
	t.Logf("false digest: %s: %s", j.State, j.Error)
}

// phaseSeconds is the sum of the node's job_phase_duration_seconds
// histogram for role and phase, read from its /metrics.
func phaseSeconds(t testing.TB, addr, role, phase string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^blackbox_job_phase_duration_seconds_sum\{phase="` + phase + `",role="` + role + `"\} (\S+)$`)
	m := re.FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// BenchmarkCachedImage: jobs with a large image (64 MiB of incompressible
// data on busybox) through the market on loopback, a channel already open:
// the first job with a new image (the seller receives and imports it) side
// by side with a second job with the same image (the seller holds it and
// the buyer sends none of it, job protocol 1.2.0), three pairs per op.
// With BLACKBOX_BENCH_BASELINE_BIN (bench.sh's binary from before this
// protocol, a 1.1.0 buyer) a third job per pair, the same image from that
// buyer, is the baseline: the image sent again and discarded. It reports
// each one's submit-to-result time, the seller's transfer phase (from its
// /metrics) and the image bytes the seller received (from its log), and
// BENCHROW lines for bench.sh's table.
func BenchmarkCachedImage(b *testing.B) {
	const size, pairs = 64 << 20, 3
	m := newMarket(b)
	seller := m.daemon([]string{"BLACKBOX_METER_PRICING_START_FEE=1000"}, "--metrics-addr", "127.0.0.1:0")
	buyerEnv := []string{"BLACKBOX_METER_MAX_CPU=0"}
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	var old *daemon // the 1.1.0 buyer
	if bin := os.Getenv("BLACKBOX_BENCH_BASELINE_BIN"); bin != "" {
		om := *m
		om.bin = bin
		old = om.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
		om.fund(old.proc, 1_000_000)
		if seen, _ := seesMarket(old, 1, 30*time.Second); seen == 0 {
			// Its decoders refuse fields it does not know (the offer's
			// network, since stop 18; docs/versions.md): the first job
			// is the baseline.
			b.Log("the 1.1.0 buyer cannot read this version's offers: the first job is the baseline")
			old.stop()
			old = nil
		}
	} else {
		b.Log("no BLACKBOX_BENCH_BASELINE_BIN: no 1.1.0 buyer to compare with")
	}
	metrics := metricsAddr(b, m.bin, seller.proc)
	work := b.TempDir()
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "5000"}
	job := []string{"sh", "-c", "wc -c < /data > /out/n"}
	type figures struct {
		took, transfer time.Duration
		bytes          int64
	}
	// run submits one job from buyer and adds its time, the seller's
	// transfer phase and the image bytes the seller received to f.
	run := func(buyer *daemon, image string, f *figures) figures {
		out := filepath.Join(work, "out")
		os.RemoveAll(out)
		before := phaseSeconds(b, metrics, "seller", "transfer")
		start := time.Now()
		var j *contract.JobStatus
		if buyer == old {
			j = submitOld(b, buyer, image, out, flags, job...)
		} else {
			j = submit(b, buyer, image, out, flags, job...)
		}
		took := time.Since(start)
		if j.State != contract.JobDone || j.ExitCode != 0 {
			b.Fatalf("job: %s exit %d: %s", j.State, j.ExitCode, j.Error)
		}
		if got, _ := os.ReadFile(filepath.Join(out, "out", "n")); strings.TrimSpace(string(got)) != strconv.Itoa(size) {
			b.Fatalf("out/n: %q", got)
		}
		transfer := time.Duration((phaseSeconds(b, metrics, "seller", "transfer") - before) * float64(time.Second))
		received, _ := imageTransfer(b, seller.logs.String(), j.ContractID)
		one := figures{took, transfer, max(received, 0)}
		f.took, f.transfer, f.bytes = f.took+one.took, f.transfer+one.transfer, f.bytes+one.bytes
		return one
	}
	// Open the channels with untimed jobs (their image is not used again).
	warm := dataImage(b, work, size, 0)
	run(buyer, warm, &figures{})
	if old != nil {
		run(old, warm, &figures{})
	}

	var first, second, before figures
	seed := uint64(time.Now().UnixNano())
	for b.Loop() {
		for range pairs {
			b.StopTimer()
			seed++
			image := dataImage(b, work, size, seed)
			b.StartTimer()
			f, s := run(buyer, image, &first), run(buyer, image, &second)
			b.Logf("first job %s (seller transfer %s, %d image bytes), second %s (seller transfer %s, %d image bytes)",
				f.took.Round(time.Millisecond), f.transfer.Round(time.Millisecond), f.bytes, s.took.Round(time.Millisecond), s.transfer.Round(time.Millisecond), s.bytes)
			if old != nil {
				o := run(old, image, &before)
				b.Logf("the same image from a 1.1.0 buyer: %s (seller transfer %s, %d image bytes)", o.took.Round(time.Millisecond), o.transfer.Round(time.Millisecond), o.bytes)
			}
			os.Remove(image)
		}
	}
	n := float64(b.N * pairs)
	ms := func(d time.Duration) float64 { return float64(d.Milliseconds()) / n }
	report := func(f figures, name string) {
		b.ReportMetric(ms(f.took), name+"-ms/job")
		b.ReportMetric(ms(f.transfer), name+"-transfer-ms/job")
		b.ReportMetric(float64(f.bytes)/n, name+"-image-B/job")
	}
	report(first, "first")
	report(second, "second")
	// The baseline of the second job: the same job before 1.2.0 if
	// measured, else the first job.
	base, baseName := first, "first job"
	if old != nil {
		report(before, "v1.1-second")
		base, baseName = before, "1.1.0 buyer, same image"
	}
	met := map[bool]string{true: "yes", false: "no"}
	fmt.Printf("BENCHROW image bytes sent, second job with the same 64 MiB image = %.0f B|%s %.1f MB|%.2f|0 B (never sent again)|%s\n",
		float64(second.bytes)/n, baseName, float64(base.bytes)/n/1e6, float64(second.bytes)/float64(base.bytes), met[second.bytes == 0])
	xr := float64(second.transfer) / float64(base.transfer)
	fmt.Printf("BENCHROW seller transfer phase, second job with the same 64 MiB image = %.0f ms|%s %.0f ms|%.3f|<= 0.05|%s\n",
		ms(second.transfer), baseName, ms(base.transfer), xr, met[xr <= 0.05])
	fmt.Printf("BENCHROW submit to result, second job with the same 64 MiB image = %.2f s|%s %.2f s|%.2f|- (informational)|-\n",
		ms(second.took)/1000, baseName, ms(base.took)/1000, float64(second.took)/float64(base.took))
}

// submitOld is submit for the baseline binary, whose `submit --json`
// prints the job's status once, at the end, instead of events.
func submitOld(t testing.TB, buyer *daemon, image, out string, flags []string, cmd ...string) *contract.JobStatus {
	t.Helper()
	args := append([]string{"--data-dir", buyer.dir, "submit", "--json", "--image", image, "--out", out}, flags...)
	stdout, err := exec.Command(buyer.m.bin, append(append(args, "--"), cmd...)...).Output()
	var j contract.JobStatus
	if jerr := json.Unmarshal(stdout, &j); jerr != nil {
		t.Fatalf("baseline submit --json: %v (exit: %v)\n%s", jerr, err, stdout)
	}
	return &j
}
