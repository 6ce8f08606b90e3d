package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// waitingBackend answers WaitJob when release is closed or its context
// ends, and says why it returned.
type waitingBackend struct {
	fakeBackend
	release chan struct{}
	asked   chan time.Time     // the since each call was given
	ended   chan error         // ctx.Err() when the wait ended by its context
	job     contract.JobStatus // what it answers
}

func (b *waitingBackend) WaitJob(ctx context.Context, id string, since time.Time) (*contract.JobStatus, error) {
	b.asked <- since
	select {
	case <-b.release:
		b.ended <- nil
	case <-ctx.Done():
		b.ended <- ctx.Err()
	}
	j := b.job
	j.ID = id
	return &j, nil
}

func newWaiting() *waitingBackend {
	return &waitingBackend{release: make(chan struct{}), asked: make(chan time.Time, 4), ended: make(chan error, 4),
		job: contract.JobStatus{State: contract.JobRunning}}
}

// TestWaitJob: GET /v1/jobs/{id}?wait=D&since=T reaches the backend's
// WaitJob with T and answers when the job changes; without wait the job is
// answered at once; a bad wait or since is a bad request.
func TestWaitJob(t *testing.T) {
	b := newWaiting()
	c, _ := serve(t, b)
	since := time.Date(2026, 12, 1, 20, 0, 0, 123456789, time.UTC)
	got := make(chan *contract.JobStatus, 1)
	go func() {
		j, err := c.WaitJob(context.Background(), "j1", since, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- j
	}()
	if s := <-b.asked; !s.Equal(since) {
		t.Errorf("since reached the backend as %s, want %s", s, since)
	}
	close(b.release)
	if j := <-got; j.ID != "j1" || j.State != contract.JobRunning {
		t.Errorf("answer: %+v", j)
	}
	if err := <-b.ended; err != nil {
		t.Errorf("the wait ended by %v, not by the change", err)
	}

	b.fakeBackend.calls = nil
	if _, err := c.Job(context.Background(), "j2"); err != nil || len(b.fakeBackend.calls) != 1 {
		t.Errorf("a plain GET: %v, backend calls %v", err, b.fakeBackend.calls)
	}
	for _, q := range []string{"wait=soon", "wait=-1s", "wait=1s&since=yesterday"} {
		err := c.do(context.Background(), "GET", "/v1/jobs/j1?"+q, nil, nil)
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("?%s: %v, want a bad request", q, err)
		}
	}
}

// TestCloseEndsWaits: closing the server ends the requests waiting on a
// job (by cancelling them) instead of waiting for them.
func TestCloseEndsWaits(t *testing.T) {
	dir := t.TempDir()
	b := newWaiting()
	srv, err := Listen(dir, b, quiet())
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(dir)
	go c.WaitJob(context.Background(), "j1", time.Time{}, time.Minute)
	<-b.asked
	srv.Close()
	if err := <-b.ended; !errors.Is(err, context.Canceled) {
		t.Errorf("the wait ended by %v, want the server's cancel", err)
	}
}
