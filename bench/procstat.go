package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// It is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)
// returns the constant the kernel exports to userspace).
const clockTicks = 100

// procUsage is CPU time and memory of a process tree at one instant.
type procUsage struct {
	// Ticks is user+system CPU time in clock ticks, summed over the
	// process and its live descendants (nginx workers), all threads
	// included.
	Ticks int64
	// CPUNanos is the same CPU time in nanoseconds from
	// /proc/PID/task/TID/schedstat, summed over live threads: 10ms ticks
	// are too coarse for a few thousand requests (one tick is 10µs per
	// request over 1,000 requests). 0 when the kernel lacks schedstat.
	CPUNanos int64
	// RSSKiB sums VmRSS over the tree (shared pages counted once per
	// process); PSSKiB sums the proportional set size, which counts a page
	// shared by n processes as 1/n each and so is the tree's true total.
	RSSKiB int64
	PSSKiB int64
	// Pids is how many processes were summed.
	Pids int
}

// treeUsage samples pid and its descendants.
func treeUsage(pid int) (procUsage, error) {
	pids, err := descendants(pid)
	if err != nil {
		return procUsage{}, err
	}
	var u procUsage
	for _, p := range pids {
		t, err := cpuTicks(p)
		if err != nil {
			continue // exited between listing and reading
		}
		u.Ticks += t
		u.CPUNanos += cpuNanos(p)
		u.RSSKiB += statusKiB(p, "VmRSS:")
		u.PSSKiB += pssKiB(p)
		u.Pids++
	}
	if u.Pids == 0 {
		return u, fmt.Errorf("procstat: process %d is gone", pid)
	}
	return u, nil
}

// descendants returns pid followed by every live process below it.
func descendants(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f, err := statFields(data)
		if err != nil {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// statFields returns the fields of /proc/PID/stat after the command name,
// so f[0] is field 3 (state), f[1] field 4 (ppid), f[11] field 14 (utime)
// and f[12] field 15 (stime). The command is in parentheses and may itself
// contain spaces and parentheses, so the split starts after the last ')'.
func statFields(data []byte) ([]string, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 > len(data) {
		return nil, fmt.Errorf("procstat: malformed stat %q", data)
	}
	f := strings.Fields(string(data[i+2:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("procstat: short stat %q", data)
	}
	return f, nil
}

// cpuTicks returns utime+stime of one process (all its threads).
func cpuTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f, err := statFields(data)
	if err != nil {
		return 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("procstat: bad times in %q", data)
	}
	return ut + st, nil
}

// cpuNanos sums the on-CPU time of pid's live threads from schedstat
// (first field, nanoseconds). A thread that exited takes its time with it,
// which the processes measured here (Go runtimes, nginx workers, HAProxy
// threads) do not do mid-run.
func cpuNanos(pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum
}

// statusKiB reads one "Key: N kB" line of /proc/PID/status; 0 if absent.
func statusKiB(pid int, key string) int64 {
	return kibLine(fmt.Sprintf("/proc/%d/status", pid), key)
}

// pssKiB reads Pss from /proc/PID/smaps_rollup (Linux 4.14+); 0 if absent.
func pssKiB(pid int) int64 {
	return kibLine(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

func kibLine(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key) {
			fs := strings.Fields(line[len(key):])
			if len(fs) > 0 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// machineBusyTicks is the busy CPU time of the whole machine from the
// first line of /proc/stat (user, nice, system, irq, softirq, steal), in
// clock ticks. Minus what the target, load generator and upstream used, it
// is the background load of a shared machine during a run.
func machineBusyTicks() int64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, _ := strconv.ParseInt(f[i], 10, 64)
		busy += n
	}
	return busy
}
