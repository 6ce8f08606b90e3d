package meter

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy is a validated Config in numbers: what Spare applies to a
// measurement. It does no I/O, so it can be tested and reused on its own.
type Policy struct {
	// Reserve is kept for the owner.
	Reserve Capacity
	// Caps are the most sold in total, Unlimited where unset.
	Caps Capacity
	// Uplink is the declared uplink in bits/s.
	Uplink int64
	// Schedule is when selling is allowed.
	Schedule Schedule
	// Threshold is the relative change that counts as a change (see
	// Config.ChangeThreshold).
	Threshold float64
	// Power sets the price floor.
	Power Power
	// Pricing is what the node asks.
	Pricing Pricing
	// CPUAllocatable counts all cores as free CPU instead of idle time
	// (Config.CPUBasis "allocatable").
	CPUAllocatable bool
}

// Policy compiles c into a Policy; the error is the one Validate returns.
func (c Config) Policy() (Policy, error) { return c.policy(nil) }

// Measured is one measurement of the machine.
type Measured struct {
	// At is when it was taken.
	At time.Time `json:"at"`
	// Total is the machine's size: all cores, all RAM, the size of the data
	// dir's filesystem, the declared uplink.
	Total Capacity `json:"total"`
	// Free is what is idle now: idle CPU over the last interval, available
	// RAM, free disk for unprivileged users, the uplink as corrected by real
	// transfers.
	Free Capacity `json:"free"`
}

// Reason explains in words why Spare returned what it did, for the status
// command: "spare", "outside available hours 22:00-07:00 mon-fri", "price 2
// sat/core-h below power floor 3". It names no fluctuating numbers except
// configured ones, so a change of Reason is worth a log line.
type Reason string

// ReasonSpare is the Reason when everything is on offer as measured.
const ReasonSpare Reason = "spare"

// ReasonNotMeasured is the Reason before the first sample.
const ReasonNotMeasured Reason = "not measured yet"

// Spare is the capacity on offer at now: m.Free − held − Reserve, limited
// so that held plus spare stays within Caps, and zero outside the schedule
// or when the CPU price is below the power floor.
//
// Measured free capacity already excludes what running jobs use, so
// subtracting held as well under-offers while contracts are busy; that
// errs on the side of never overselling.
func (p Policy) Spare(now time.Time, m Measured, held Capacity) (Capacity, Reason) {
	if m.At.IsZero() {
		return Capacity{}, ReasonNotMeasured
	}
	if !p.Schedule.Allows(now) {
		r := "outside available hours " + p.Schedule.String()
		if loc := p.Schedule.loc; loc != nil && loc != time.Local {
			r += " (" + loc.String() + ")"
		}
		return Capacity{}, Reason(r)
	}
	// The tolerance keeps 55 from being "below" 50 W × 1000 sat × 1.1.
	if floor := p.Power.Floor(); p.Pricing.CoreHour < floor*(1-1e-9) {
		return Capacity{}, Reason(fmt.Sprintf("price %s sat/core-h below power floor %s",
			trimFloat(p.Pricing.CoreHour), trimFloat(floor)))
	}
	free := m.Free
	if p.CPUAllocatable {
		free.MilliCPU = m.Total.MilliCPU
	}
	free.Bandwidth = min(free.Bandwidth, p.Uplink)
	left := free.Sub(held).Sub(p.Reserve)
	room := p.Caps.Sub(held)
	spare := left.Min(room)

	var notes []string
	dims := []struct {
		name        string
		left, room  int64
		spare, held int64
	}{
		{"cpu", left.MilliCPU, room.MilliCPU, spare.MilliCPU, held.MilliCPU},
		{"memory", left.Memory, room.Memory, spare.Memory, held.Memory},
		{"disk", left.Disk, room.Disk, spare.Disk, held.Disk},
		{"bandwidth", left.Bandwidth, room.Bandwidth, spare.Bandwidth, held.Bandwidth},
	}
	for _, d := range dims {
		switch {
		case d.spare == 0 && d.room == 0 && d.held > 0:
			notes = append(notes, "no "+d.name+": contracts hold all of meter.max."+d.name)
		case d.spare == 0 && d.room == 0:
			notes = append(notes, "no "+d.name+": meter.max."+d.name+" is 0")
		case d.spare == 0 && d.held > 0:
			notes = append(notes, "no "+d.name+" left after contracts and reserve")
		case d.spare == 0 && d.name == "bandwidth" && p.Uplink == 0:
			notes = append(notes, "no bandwidth: meter.uplink not set")
		case d.spare == 0:
			notes = append(notes, "no "+d.name+" left after reserve")
		case d.room < d.left:
			notes = append(notes, d.name+" capped by meter.max."+d.name)
		}
	}
	switch {
	case spare.IsZero():
		return spare, Reason("nothing to spare: " + strings.Join(notes, ", "))
	case len(notes) > 0:
		return spare, Reason("spare; " + strings.Join(notes, ", "))
	}
	return spare, ReasonSpare
}

// trimFloat renders a price with at most two decimals and no trailing zeros.
func trimFloat(f float64) string {
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
