package contract

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestJobJSON: a job says states by name, money in _sat and durations in
// _seconds, round-trips, and a job stored in the older form still loads.
func TestJobJSON(t *testing.T) {
	j := JobStatus{ID: "j1", State: JobDone, Paid: 7000, Billed: 6000,
		Request:  Request{Image: "busybox", Duration: 90 * time.Second, MaxPrice: 8000},
		Attempts: []Attempt{{Seller: goldenID(t, 1), ContractID: "c1", State: StateSettled, Paid: 7000, Price: 7000, StartFee: 1000, Fault: FaultNone}}}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"paid_sat":7000`, `"billed_sat":6000`, `"max_price_sat":8000`, `"duration_seconds":90`,
		`"state":"settled"`, `"state":"done"`, `"start_fee_sat":1000`, `"price_sat":7000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("job JSON lacks %s: %s", want, b)
		}
	}
	for _, bad := range []string{"_sats", `"duration":`} {
		if strings.Contains(string(b), bad) {
			t.Errorf("job JSON has %s: %s", bad, b)
		}
	}
	var back JobStatus
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Paid != 7000 || back.Request.Duration != 90*time.Second || back.Request.MaxPrice != 8000 || back.Attempts[0].State != StateSettled {
		t.Errorf("round trip: %+v", back)
	}
	old := `{"id":"j0","request":{"image":"busybox","command":["true"],"resources":{"cpu_millis":1000},"duration":120000000000,"max_price_sats":1000},
		"state":"failed","paid_sats":12,"billed_sats":10,"attempts":[{"contract_id":"c0","state":9,"paid_sats":12,"fault":"seller"}]}`
	var o JobStatus
	if err := json.Unmarshal([]byte(old), &o); err != nil {
		t.Fatalf("old record: %v", err)
	}
	if o.Paid != 12 || o.Billed != 10 || o.Request.Duration != 2*time.Minute || o.Request.MaxPrice != 1000 ||
		o.Attempts[0].State != StateFailed || o.Attempts[0].Paid != 12 {
		t.Errorf("old record read as %+v", o)
	}
}
