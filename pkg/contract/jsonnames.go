package contract

import (
	"encoding/json"
	"math"
	"time"
)

// The buyer's JSON (the API, `--json`, and the stored jobs) says money in
// `_sat` fields and durations in `_seconds`. Jobs stored before then used
// "paid_sats", "billed_sats", "max_price_sats" and "duration" (in
// nanoseconds); they still load.

type requestJSON Request

// MarshalJSON writes the request with its duration in seconds.
func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		requestJSON
		DurationSeconds float64 `json:"duration_seconds"`
	}{requestJSON(r), r.Duration.Seconds()})
}

// UnmarshalJSON reads a request, also in its older form.
func (r *Request) UnmarshalJSON(b []byte) error {
	var v struct {
		requestJSON
		DurationSeconds *float64       `json:"duration_seconds"`
		OldDuration     *time.Duration `json:"duration"`
		OldMaxPrice     *uint64        `json:"max_price_sats"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Request(v.requestJSON)
	switch {
	case v.DurationSeconds != nil:
		r.Duration = time.Duration(math.Round(*v.DurationSeconds * float64(time.Second)))
	case v.OldDuration != nil:
		r.Duration = *v.OldDuration
	}
	if v.OldMaxPrice != nil && r.MaxPrice == 0 {
		r.MaxPrice = *v.OldMaxPrice
	}
	return nil
}

type attemptJSON Attempt

// UnmarshalJSON reads an attempt, also in its older form.
func (a *Attempt) UnmarshalJSON(b []byte) error {
	var v struct {
		attemptJSON
		OldPaid *int64 `json:"paid_sats"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*a = Attempt(v.attemptJSON)
	if v.OldPaid != nil && a.Paid == 0 {
		a.Paid = *v.OldPaid
	}
	return nil
}

type jobJSON JobStatus

// UnmarshalJSON reads a job, also in its older form.
func (j *JobStatus) UnmarshalJSON(b []byte) error {
	var v struct {
		jobJSON
		OldPaid   *int64 `json:"paid_sats"`
		OldBilled *int64 `json:"billed_sats"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*j = JobStatus(v.jobJSON)
	if v.OldPaid != nil && j.Paid == 0 {
		j.Paid = *v.OldPaid
	}
	if v.OldBilled != nil && j.Billed == 0 {
		j.Billed = *v.OldBilled
	}
	return nil
}
