//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
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
