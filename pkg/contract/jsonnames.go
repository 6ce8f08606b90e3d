package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// The buyer's and seller's JSON (the API, `--json`, and the stored jobs
// and contracts) says money in `_sat` fields and durations in `_seconds`.
// Records stored before then used "paid_sats", "billed_sats",
// "max_price_sats" and durations in nanoseconds ("duration", "interval",
// "cpu_time", "wall"); they still load (legacy).

// legacy decodes the fields of b named by old's keys, where records
// stored before held them, into old's values.
func legacy(b []byte, old map[string]any) error {
	// Records written since hold none of the old keys: skip parsing b
	// once more (a record's decode ran this for each nested type, a few
	// times the decode itself, on every state move and job status).
	found := false
	for k := range old {
		if bytes.Contains(b, []byte(`"`+k+`"`)) {
			found = true
			break
		}
	}
	if !found {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for k, dst := range old {
		if v, ok := raw[k]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	}
	return nil
}

// seconds sets *d from s when s is given.
func seconds(s *float64, d *time.Duration) {
	if s != nil {
		*d = time.Duration(math.Round(*s * float64(time.Second)))
	}
}

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
		DurationSeconds *float64 `json:"duration_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Request(v.requestJSON)
	seconds(v.DurationSeconds, &r.Duration)
	return legacy(b, map[string]any{"duration": &r.Duration, "max_price_sats": &r.MaxPrice})
}

type proposalJSON Proposal

// MarshalJSON writes the proposal with its billing interval in seconds.
func (p Proposal) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		proposalJSON
		IntervalSeconds float64 `json:"interval_seconds"`
	}{proposalJSON(p), p.Interval.Seconds()})
}

// UnmarshalJSON reads a proposal, also in its older form.
func (p *Proposal) UnmarshalJSON(b []byte) error {
	var v struct {
		proposalJSON
		IntervalSeconds *float64 `json:"interval_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Proposal(v.proposalJSON)
	seconds(v.IntervalSeconds, &p.Interval)
	return legacy(b, map[string]any{"interval": &p.Interval})
}

type usageJSON Usage

// MarshalJSON writes the usage with its times in seconds.
func (u Usage) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		usageJSON
		CPUSeconds  float64 `json:"cpu_seconds"`
		WallSeconds float64 `json:"wall_seconds"`
	}{usageJSON(u), u.CPUTime.Seconds(), u.Wall.Seconds()})
}

// UnmarshalJSON reads a usage, also in its older form.
func (u *Usage) UnmarshalJSON(b []byte) error {
	var v struct {
		usageJSON
		CPUSeconds  *float64 `json:"cpu_seconds"`
		WallSeconds *float64 `json:"wall_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*u = Usage(v.usageJSON)
	seconds(v.CPUSeconds, &u.CPUTime)
	seconds(v.WallSeconds, &u.Wall)
	return legacy(b, map[string]any{"cpu_time": &u.CPUTime, "wall": &u.Wall})
}

type (
	receiptJSON   Receipt
	recordJSON    Record
	attemptJSON   Attempt
	jobJSON       JobStatus
	spotCheckJSON SpotCheck
)

// UnmarshalJSON reads a receipt, also in its older form.
func (r *Receipt) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*receiptJSON)(r)); err != nil {
		return err
	}
	return legacy(b, map[string]any{"billed_sats": &r.Billed})
}

// UnmarshalJSON reads a contract record, also in its older form.
func (r *Record) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*recordJSON)(r)); err != nil {
		return err
	}
	return legacy(b, map[string]any{"paid_sats": &r.Paid})
}

// UnmarshalJSON reads an attempt, also in its older form.
func (a *Attempt) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*attemptJSON)(a)); err != nil {
		return err
	}
	return legacy(b, map[string]any{"paid_sats": &a.Paid})
}

// UnmarshalJSON reads a job, also in its older form.
func (j *JobStatus) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*jobJSON)(j)); err != nil {
		return err
	}
	return legacy(b, map[string]any{"paid_sats": &j.Paid, "billed_sats": &j.Billed})
}

// UnmarshalJSON reads a spot check, also in its older form.
func (s *SpotCheck) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*spotCheckJSON)(s)); err != nil {
		return err
	}
	return legacy(b, map[string]any{"paid_sats": &s.Paid})
}
