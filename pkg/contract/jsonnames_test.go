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

// TestRecordJSON: a contract record, its proposal and a receipt's usage
// the same way, old and new.
func TestRecordJSON(t *testing.T) {
	r := Record{ID: "c1", Role: RoleBuyer, State: StateRunning, Paid: 1200,
		Proposal: &Proposal{Interval: 2 * time.Second, Request: Request{Duration: time.Minute}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"role":"buyer"`, `"state":"running"`, `"paid_sat":1200`, `"interval_seconds":2`, `"duration_seconds":60`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("record JSON lacks %s: %s", want, b)
		}
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil || back.Paid != 1200 || back.Proposal.Interval != 2*time.Second || back.State != StateRunning {
		t.Errorf("round trip: %+v %v", back, err)
	}
	old := `{"id":"c0","role":2,"state":6,"paid_sats":300,"proposal":{"interval":2000000000,"request":{"duration":60000000000}},"history":[{"from":4,"to":5}]}`
	var o Record
	if err := json.Unmarshal([]byte(old), &o); err != nil {
		t.Fatalf("old record: %v", err)
	}
	if o.Role != RoleBuyer || o.State != StateSettled || o.Paid != 300 || o.Proposal.Interval != 2*time.Second ||
		o.Proposal.Request.Duration != time.Minute || o.History[0].To != StateCompleted {
		t.Errorf("old record read as %+v", o)
	}
	var u Usage
	if err := json.Unmarshal([]byte(`{"cpu_time":1500000000,"wall":2000000000}`), &u); err != nil || u.CPUTime != 1500*time.Millisecond || u.Wall != 2*time.Second {
		t.Errorf("old usage: %+v %v", u, err)
	}
	if b, _ := json.Marshal(Receipt{Billed: 7, Usage: u}); !strings.Contains(string(b), `"cpu_seconds":1.5,`) || !strings.Contains(string(b), `"billed_sat":7`) {
		t.Errorf("receipt JSON: %s", b)
	}
}
