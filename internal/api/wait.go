package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// maxJobWait bounds one GET /v1/jobs/{id}?wait=D: the client asks again.
const maxJobWait = 30 * time.Second

// jobWaiter is a Backend that can wait on a job's changes (the node).
type jobWaiter interface {
	// WaitJob returns job id once it changed after since, or ended, or
	// ctx is done (then as it is).
	WaitJob(ctx context.Context, id string, since time.Time) (*contract.JobStatus, error)
}

// waitJob answers GET /v1/jobs/{id}?wait=D&since=T: the job once it was
// updated after T (RFC 3339; none: at once) or ended, or after D.
func waitJob(r *http.Request, jw jobWaiter, wait string) (*contract.JobStatus, error) {
	d, err := time.ParseDuration(wait)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%w: wait %q is not a duration such as 10s", ErrBadRequest, wait)
	}
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		if since, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return nil, fmt.Errorf("%w: since %q is not an RFC 3339 time", ErrBadRequest, s)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(d, maxJobWait))
	defer cancel()
	return jw.WaitJob(ctx, r.PathValue("id"), since)
}
