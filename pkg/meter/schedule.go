package meter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is when the operator allows selling: time-of-day windows on some
// weekdays, in one time zone. The zero Schedule (no windows, no days) allows
// every minute of every day in UTC.
//
// A window that crosses midnight belongs to the day it starts on: with hours
// "22:00-07:00" and days "mon-fri", Friday 23:00 and Saturday 03:00 are inside
// (Friday night's window), Monday 03:00 is not (that window began on Sunday).
type Schedule struct {
	hours   string
	days    string
	windows []window // empty: all day
	weekday [7]bool  // indexed by time.Weekday
	alldays bool     // days was empty
	loc     *time.Location
}

// window is [start, end) in minutes after midnight; end > start, and an end
// beyond 1440 means the window runs into the next day.
type window struct{ start, end int }

// ParseSchedule parses hours such as "22:00-07:00" or "08:00-12:00,13:00-18:00"
// (empty: all day; "24:00" is allowed as an end) and days such as "mon-fri",
// "sat,sun" or "fri-mon" (empty: every day), interpreted in loc (nil: UTC).
func ParseSchedule(hours, days string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := Schedule{hours: strings.TrimSpace(hours), days: strings.TrimSpace(days), loc: loc}
	ws, err := parseHours(s.hours)
	if err != nil {
		return Schedule{}, fmt.Errorf("hours: %w", err)
	}
	s.windows = ws
	if s.days == "" {
		s.alldays = true
	} else if s.weekday, err = parseDays(s.days); err != nil {
		return Schedule{}, fmt.Errorf("days: %w", err)
	}
	return s, nil
}

// Always reports whether the schedule allows every moment.
func (s Schedule) Always() bool { return len(s.windows) == 0 && s.days == "" }

// Allows reports whether t falls inside the schedule.
func (s Schedule) Allows(t time.Time) bool {
	if s.Always() {
		return true
	}
	loc := s.loc
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	minute := t.Hour()*60 + t.Minute()
	today := t.Weekday()
	yesterday := (today + 6) % 7
	if len(s.windows) == 0 {
		return s.dayOK(today)
	}
	for _, w := range s.windows {
		if s.dayOK(today) && minute >= w.start && minute < w.end {
			return true
		}
		// The tail of a window that started yesterday and crosses midnight.
		if w.end > 24*60 && s.dayOK(yesterday) && minute < w.end-24*60 {
			return true
		}
	}
	return false
}

// String renders the schedule as the operator wrote it, e.g.
// "22:00-07:00 mon-fri", or "always".
func (s Schedule) String() string {
	parts := []string{}
	if s.hours != "" {
		parts = append(parts, s.hours)
	}
	if s.days != "" {
		parts = append(parts, s.days)
	}
	if len(parts) == 0 {
		return "always"
	}
	return strings.Join(parts, " ")
}

func (s Schedule) dayOK(d time.Weekday) bool { return s.alldays || s.weekday[d] }

func parseHours(h string) ([]window, error) {
	if h == "" {
		return nil, nil
	}
	var ws []window
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		from, to, ok := strings.Cut(part, "-")
		if !ok {
			return nil, fmt.Errorf("%q: want a range like 22:00-07:00", part)
		}
		a, err := parseClock(from)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		b, err := parseClock(to)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		switch {
		case a == 24*60:
			return nil, fmt.Errorf("%q: a range cannot start at 24:00", part)
		case a == b:
			return nil, fmt.Errorf("%q: empty range (use 00:00-24:00 for all day)", part)
		case b < a:
			b += 24 * 60 // crosses midnight
		}
		ws = append(ws, window{a, b})
	}
	return ws, nil
}

// parseClock parses "HH:MM" (00:00 to 24:00) into minutes after midnight.
func parseClock(s string) (int, error) {
	s = strings.TrimSpace(s)
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || h > 24 || (h == 24 && m != 0) ||
		strings.ContainsAny(s, "+-") {
		return 0, fmt.Errorf("time %q: want HH:MM between 00:00 and 24:00", s)
	}
	return h*60 + m, nil
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	"sunday": time.Sunday, "monday": time.Monday, "tuesday": time.Tuesday,
	"wednesday": time.Wednesday, "thursday": time.Thursday, "friday": time.Friday,
	"saturday": time.Saturday, "tues": time.Tuesday, "thur": time.Thursday, "thurs": time.Thursday,
}

func parseDay(s string) (time.Weekday, error) {
	d, ok := dayNames[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return 0, fmt.Errorf("%q is not a day (mon, tue, wed, thu, fri, sat, sun)", strings.TrimSpace(s))
	}
	return d, nil
}

// parseDays parses "mon-fri", "sat,sun", "fri-mon" (wrapping) or a mix.
func parseDays(s string) ([7]bool, error) {
	var set [7]bool
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			return set, errors.New("empty day in list")
		}
		from, to, isRange := strings.Cut(part, "-")
		a, err := parseDay(from)
		if err != nil {
			return set, err
		}
		if !isRange {
			set[a] = true
			continue
		}
		b, err := parseDay(to)
		if err != nil {
			return set, err
		}
		for d := a; ; d = (d + 1) % 7 {
			set[d] = true
			if d == b {
				break
			}
		}
	}
	return set, nil
}
