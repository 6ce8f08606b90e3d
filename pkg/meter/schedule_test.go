package meter

import (
	"testing"
	"time"
)

// at returns a time in loc during the week of Monday 2026-11-23:
// day 0 is Monday, 6 is Sunday, 7 the next Monday.
func at(loc *time.Location, day, hour, minute int) time.Time {
	return time.Date(2026, 11, 23+day, hour, minute, 0, 0, loc)
}

const (
	mon = iota
	tue
	wed
	thu
	fri
	sat
	sun
	nextMon
)

func TestScheduleAllows(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		name        string
		hours, days string
		t           time.Time
		want        bool
	}{
		{"empty is always", "", "", at(utc, wed, 3, 17), true},
		{"inside day range", "08:00-18:00", "", at(utc, wed, 8, 0), true},
		{"end is exclusive", "08:00-18:00", "", at(utc, wed, 18, 0), false},
		{"before start", "08:00-18:00", "", at(utc, wed, 7, 59), false},
		{"night before midnight", "22:00-07:00", "", at(utc, wed, 23, 30), true},
		{"night after midnight", "22:00-07:00", "", at(utc, thu, 6, 59), true},
		{"night end", "22:00-07:00", "", at(utc, thu, 7, 0), false},
		{"night midday", "22:00-07:00", "", at(utc, thu, 12, 0), false},
		{"night start at midnight exactly", "22:00-07:00", "", at(utc, thu, 0, 0), true},
		{"several ranges, first", "08:00-12:00,13:00-18:00", "", at(utc, tue, 11, 59), true},
		{"several ranges, gap", "08:00-12:00,13:00-18:00", "", at(utc, tue, 12, 30), false},
		{"several ranges, second", "08:00-12:00, 13:00-18:00", "", at(utc, tue, 13, 0), true},
		{"until 24:00", "18:00-24:00", "", at(utc, tue, 23, 59), true},
		{"until 24:00 not next day", "18:00-24:00", "", at(utc, wed, 0, 0), false},
		{"all day", "00:00-24:00", "", at(utc, wed, 0, 0), true},
		{"weekday in", "", "mon-fri", at(utc, fri, 23, 59), true},
		{"weekday out", "", "mon-fri", at(utc, sat, 0, 0), false},
		{"weekend list", "", "sat,sun", at(utc, sun, 12, 0), true},
		{"weekend list out", "", "sat,sun", at(utc, nextMon, 0, 0), false},
		{"wrapping day range", "", "fri-mon", at(utc, sun, 12, 0), true},
		{"wrapping day range out", "", "fri-mon", at(utc, wed, 12, 0), false},
		{"full day names", "", "Saturday,sunday", at(utc, sat, 1, 0), true},
		// A window crossing midnight belongs to the day it starts on.
		{"friday night runs into saturday", "22:00-07:00", "mon-fri", at(utc, sat, 3, 0), true},
		{"friday night ends on saturday", "22:00-07:00", "mon-fri", at(utc, sat, 7, 0), false},
		{"saturday night not allowed", "22:00-07:00", "mon-fri", at(utc, sat, 22, 0), false},
		{"sunday night not allowed", "22:00-07:00", "mon-fri", at(utc, sun, 23, 0), false},
		{"monday early belongs to sunday", "22:00-07:00", "mon-fri", at(utc, nextMon, 3, 0), false},
		{"tuesday early belongs to monday", "22:00-07:00", "mon-fri", at(utc, tue, 3, 0), true},
		{"monday night", "22:00-07:00", "mon-fri", at(utc, mon, 22, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.hours, tt.days, utc)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Allows(tt.t); got != tt.want {
				t.Errorf("%q %q at %s: got %v, want %v", tt.hours, tt.days, tt.t.Format("Mon 15:04"), got, tt.want)
			}
		})
	}
}

func TestScheduleTimezone(t *testing.T) {
	// The operator's night is 22:00-07:00 in UTC+10; the test clock is UTC.
	plus10 := time.FixedZone("UTC+10", 10*3600)
	s, err := ParseSchedule("22:00-07:00", "mon-fri", plus10)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		t    time.Time
		want bool
	}{
		{at(time.UTC, mon, 12, 0), true},   // Mon 22:00 local
		{at(time.UTC, mon, 11, 59), false}, // Mon 21:59 local
		{at(time.UTC, mon, 20, 59), true},  // Tue 06:59 local
		{at(time.UTC, mon, 21, 0), false},  // Tue 07:00 local
		{at(time.UTC, fri, 20, 0), true},   // Sat 06:00 local, Friday's night
		{at(time.UTC, sat, 13, 0), false},  // Sat 23:00 local
		{at(time.UTC, sun, 13, 0), false},  // Sun 23:00 local: Sunday is not allowed
		{at(time.UTC, sun, 15, 0), false},  // Mon 01:00 local: Sunday's night
	}
	for _, tt := range tests {
		if got := s.Allows(tt.t); got != tt.want {
			t.Errorf("at %s UTC (%s local): got %v, want %v", tt.t.Format("Mon 15:04"),
				tt.t.In(plus10).Format("Mon 15:04"), got, tt.want)
		}
	}
}

func TestParseScheduleBad(t *testing.T) {
	tests := []struct{ hours, days string }{
		{"22:00", ""},
		{"22-07", ""},
		{"25:00-07:00", ""},
		{"22:60-07:00", ""},
		{"24:00-07:00", ""},
		{"24:30-07:00", ""},
		{"08:00-08:00", ""},
		{"08:00-18:00,", ""},
		{"8:0-18:00", ""},
		{"-1:00-02:00", ""},
		{"", "monday-fry"},
		{"", "mon,,fri"},
		{"", "weekdays"},
		{"", "mon-"},
	}
	for _, tt := range tests {
		if _, err := ParseSchedule(tt.hours, tt.days, nil); err == nil {
			t.Errorf("ParseSchedule(%q, %q): want error", tt.hours, tt.days)
		}
	}
}

func TestScheduleString(t *testing.T) {
	s, err := ParseSchedule("22:00-07:00", "mon-fri", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "22:00-07:00 mon-fri" {
		t.Errorf("String() = %q", got)
	}
	if got := (Schedule{}).String(); got != "always" {
		t.Errorf("zero String() = %q", got)
	}
}
