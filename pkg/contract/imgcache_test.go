package contract

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// cachingRunner is a fakeRunner that keeps what it imported, as the
// sandbox does, and counts the image bytes it read.
type cachingRunner struct {
	*fakeRunner
	mu      sync.Mutex
	have    map[string]bool
	imports int
	read    int64
}

func (r *cachingRunner) ImportImage(ctx context.Context, rd io.Reader, digest string) (string, error) {
	cr := &countReader{r: rd}
	name, err := r.fakeRunner.ImportImage(ctx, cr, digest)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.imports++
	r.read += cr.n
	if err == nil {
		r.have[digest] = true
	}
	return name, err
}

func (r *cachingRunner) CachedImage(ctx context.Context, digest string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "img:" + digest, r.have[digest]
}

func (r *cachingRunner) counts() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.imports, r.read
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var _ ImageCache = (*cachingRunner)(nil)

// TestCachedImageNotSent: the second job with the same image sends no
// image bytes (1.2.0) and still gets its input; a seller that speaks only
// 1.1.0 is sent the image again.
func TestCachedImageNotSent(t *testing.T) {
	m := newMarket(t)
	run := &cachingRunner{fakeRunner: &fakeRunner{}, have: map[string]bool{}}
	pay := &fakePay{}
	s, sh := m.seller(nil, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run })
	_ = s
	b, bh := m.buyer(pay)
	m.connect()
	size := int64(len("a tarball, as far as the fake runner cares"))
	submit := func(input string) {
		t.Helper()
		req := m.request(2)
		m.withInput(t, &req, []byte(input))
		id, err := b.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		j := waitJob(t, b, id)
		if stderr, _ := os.ReadFile(filepath.Join(j.ResultDir, OutputStderr)); string(stderr) != "input: "+input || j.State != JobDone {
			t.Fatalf("job %s: stderr %q", j.State, stderr)
		}
	}
	submit("first")
	if imports, read := run.counts(); imports != 1 || read != size {
		t.Fatalf("first job: %d imports, %d bytes; want 1, %d", imports, read, size)
	}
	submit("second")
	if imports, read := run.counts(); imports != 1 || read != size {
		t.Fatalf("second job: %d imports, %d bytes; want the image not sent again", imports, read)
	}
	// An older seller: the buyer falls back to 1.1.0 and sends the image.
	sh.RemoveStreamHandler(JobProtocol)
	sh.RemoveStreamHandler(JobProtocol13)
	sh.RemoveStreamHandler(JobProtocol12)
	// The buyer learns it by identify's push: until then its peerstore
	// still lists 1.2.0 and it would pick it (as for a seller that
	// downgraded a moment ago).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ps, _ := bh.Peerstore().SupportsProtocols(sh.ID(), JobProtocol, JobProtocol13, JobProtocol12); len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the buyer still believes the seller speaks " + string(JobProtocol))
		}
	}
	submit("third")
	if imports, read := run.counts(); imports != 2 || read != 2*size {
		t.Fatalf("1.1.0 job: %d imports, %d bytes; want the image sent", imports, read)
	}
}

// TestCachedImageWrongDigest: a buyer whose contract names a digest the
// seller does not hold is asked for the bytes, and bytes that are not that
// digest (here the seller's cached image) are refused, never run.
func TestCachedImageWrongDigest(t *testing.T) {
	m := newMarket(t)
	run := &cachingRunner{fakeRunner: &fakeRunner{}, have: map[string]bool{m.image: true}}
	pay := &fakePay{}
	m.seller(nil, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run })
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.Rounds = 1 })
	m.connect()
	lie := "sha256:" + strings.Repeat("ab", 32)
	img, _ := os.ReadFile(filepath.Join(string(m.blobs), m.image[7:]))
	if err := os.WriteFile(filepath.Join(string(m.blobs), lie[7:]), img, 0o600); err != nil {
		t.Fatal(err)
	}
	req := m.request(2)
	req.Image = lie
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, b, id); j.State == JobDone {
		t.Fatalf("job with a false digest ran: %+v", j)
	}
	if imports, read := run.counts(); imports != 1 || read != int64(len(img)) || run.runs != 0 {
		t.Fatalf("%d imports, %d bytes, %d runs; want the bytes checked and nothing run", imports, read, run.runs)
	}
}

// FuzzReady: whatever a seller sends as its ready frame decodes or is
// refused, and what decodes encodes to bytes that decode the same.
func FuzzReady(f *testing.F) {
	f.Add([]byte{})
	f.Add(marshalReady(Ready{HaveImage: true}))
	f.Add(marshalReady(Ready{HaveImage: true, EgressPrice: 50_000}))
	f.Add([]byte{0x08, 2})
	f.Add([]byte{0x08, 1, 0x08, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := unmarshalReady(b)
		if err != nil {
			return
		}
		back, err := unmarshalReady(marshalReady(r))
		if err != nil || back != r {
			t.Fatalf("%x: %+v, again %+v %v", b, r, back, err)
		}
	})
}

func TestReadyRefusals(t *testing.T) {
	for _, b := range [][]byte{{0x08, 2}, {0x08, 1, 0x08, 1}, {0x18, 1}, {0x10, 1, 0x10, 1}, {0x08}, bytes.Repeat([]byte{0}, maxReadySize+1)} {
		if _, err := unmarshalReady(b); err == nil {
			t.Errorf("%x decoded", b)
		}
	}
}
