// runtimetest runs as the process of a container and checks, from inside, that the runtime
// applied the bundle's config.json (read from --path, default "/") as the OCI runtime spec
// requires: process, user, capabilities, rlimits, hostname, mounts, devices, masked and
// read-only paths, sysctls, ID mappings, rootfs propagation, oomScoreAdj, seccomp.
//
// It prints TAP on stdout: one line per assertion, whose description never contains
// values that differ between runtimes, so that the results of two runtimes can be
// compared line by line; the details of a failure follow as "# " comments.
package main

import (
	// First: records the rlimits before package os raises RLIMIT_NOFILE (Go >= 1.19).
	"isoboxconformance/rlsave"

	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

type idMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

type device struct {
	Path     string  `json:"path"`
	Type     string  `json:"type"`
	Major    int64   `json:"major"`
	Minor    int64   `json:"minor"`
	FileMode *uint32 `json:"fileMode"`
	UID      *uint32 `json:"uid"`
	GID      *uint32 `json:"gid"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options"`
}

type spec struct {
	Hostname string `json:"hostname"`
	Root     *struct {
		Path     string `json:"path"`
		Readonly bool   `json:"readonly"`
	} `json:"root"`
	Mounts  []mount `json:"mounts"`
	Process *struct {
		Terminal bool `json:"terminal"`
		User     struct {
			UID            uint32   `json:"uid"`
			GID            uint32   `json:"gid"`
			Umask          *uint32  `json:"umask"`
			AdditionalGids []uint32 `json:"additionalGids"`
		} `json:"user"`
		Args         []string `json:"args"`
		Env          []string `json:"env"`
		Cwd          string   `json:"cwd"`
		Capabilities *struct {
			Bounding    []string `json:"bounding"`
			Effective   []string `json:"effective"`
			Inheritable []string `json:"inheritable"`
			Permitted   []string `json:"permitted"`
			Ambient     []string `json:"ambient"`
		} `json:"capabilities"`
		Rlimits []struct {
			Type string `json:"type"`
			Hard uint64 `json:"hard"`
			Soft uint64 `json:"soft"`
		} `json:"rlimits"`
		NoNewPrivileges bool   `json:"noNewPrivileges"`
		ApparmorProfile string `json:"apparmorProfile"`
		OOMScoreAdj     *int   `json:"oomScoreAdj"`
	} `json:"process"`
	Linux *struct {
		UIDMappings       []idMapping       `json:"uidMappings"`
		GIDMappings       []idMapping       `json:"gidMappings"`
		Sysctl            map[string]string `json:"sysctl"`
		Devices           []device          `json:"devices"`
		Seccomp           *json.RawMessage  `json:"seccomp"`
		RootfsPropagation string            `json:"rootfsPropagation"`
		MaskedPaths       []string          `json:"maskedPaths"`
		ReadonlyPaths     []string          `json:"readonlyPaths"`
	} `json:"linux"`
}

// --- TAP ---

var count, failed int

func ok(pass bool, description string, diag ...string) {
	count++
	status := "ok"
	if !pass {
		status = "not ok"
		failed++
	}
	fmt.Printf("%s %d - %s\n", status, count, description)
	if !pass {
		for _, d := range diag {
			for _, line := range strings.Split(strings.TrimRight(d, "\n"), "\n") {
				fmt.Printf("# %s\n", line)
			}
		}
	}
}

func check(description string, err error) {
	if err != nil {
		ok(false, description, err.Error())
	} else {
		ok(true, description)
	}
}

// --- helpers ---

var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

var rlimitTypes = map[string]int{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
	"RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
	"RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

func procStatus() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, found := strings.Cut(s.Text(), ":"); found {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return len(capNames) - 1
}

func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		idx := -1
		for i, c := range capNames {
			if "CAP_"+c == n {
				idx = i
			}
		}
		if idx < 0 {
			return 0, fmt.Errorf("unknown capability %s", n)
		}
		if idx <= lastCap() {
			m |= 1 << uint(idx)
		}
	}
	return m, nil
}

func capList(m uint64) string {
	var names []string
	for i, c := range capNames {
		if m&(1<<uint(i)) != 0 {
			names = append(names, c)
		}
	}
	return strings.Join(names, ",")
}

type mountInfo struct {
	mountpoint, fstype, source, options, optional string
}

func mounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, found := strings.Cut(s.Text(), " - ")
		if !found {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 2 {
			continue
		}
		out = append(out, mountInfo{mountpoint: unescape(a[4]), options: a[5],
			optional: strings.Join(a[6:], " "), fstype: b[0], source: unescape(b[1])})
	}
	return out, nil
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func writable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		f, err := os.CreateTemp(path, "runtimetest")
		if err != nil {
			return err
		}
		f.Close()
		os.Remove(f.Name())
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	f.Close()
	return nil
}

// --- validations ---

func validateRoot(s *spec) {
	if s.Root == nil || !s.Root.Readonly {
		return
	}
	err := writable("/")
	ok(err != nil, "root.readonly: the root filesystem is read-only", "a file could be created in /")
}

func validateHostname(s *spec) {
	if s.Hostname == "" {
		return
	}
	h, err := os.Hostname()
	ok(err == nil && h == s.Hostname, "hostname is set",
		fmt.Sprintf("expected %q, actual %q (%v)", s.Hostname, h, err))
}

func validateProcess(s *spec) {
	p := s.Process
	if p.Cwd != "" {
		cwd, err := os.Getwd()
		ok(err == nil && cwd == p.Cwd, "process.cwd is the working directory",
			fmt.Sprintf("expected %q, actual %q (%v)", p.Cwd, cwd, err))
	}
	var bad []string
	for _, e := range p.Env {
		k, v, _ := strings.Cut(e, "=")
		if actual, found := os.LookupEnv(k); !found || actual != v {
			bad = append(bad, fmt.Sprintf("%s: expected %q, actual %q", k, v, actual))
		}
	}
	ok(len(bad) == 0, "process.env is the environment", bad...)
	b, err := os.ReadFile("/proc/self/cmdline")
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	ok(err == nil && strings.Join(args, "\x00") == strings.Join(p.Args, "\x00"),
		"process.args are the command line", fmt.Sprintf("expected %q, actual %q", p.Args, args))

	ok(os.Getuid() == int(p.User.UID) && os.Geteuid() == int(p.User.UID), "process.user.uid",
		fmt.Sprintf("expected %d, actual %d/%d", p.User.UID, os.Getuid(), os.Geteuid()))
	ok(os.Getgid() == int(p.User.GID) && os.Getegid() == int(p.User.GID), "process.user.gid",
		fmt.Sprintf("expected %d, actual %d/%d", p.User.GID, os.Getgid(), os.Getegid()))
	groups, _ := os.Getgroups()
	want := map[int]bool{}
	for _, g := range p.User.AdditionalGids {
		want[int(g)] = true
	}
	have := map[int]bool{}
	for _, g := range groups {
		have[g] = true
	}
	same := len(want) == len(have)
	for g := range want {
		same = same && have[g]
	}
	ok(same, "process.user.additionalGids are the supplementary groups",
		fmt.Sprintf("expected %v, actual %v", p.User.AdditionalGids, groups))
	if p.User.Umask != nil {
		old := syscall.Umask(0)
		syscall.Umask(old)
		ok(uint32(old) == *p.User.Umask, "process.user.umask",
			fmt.Sprintf("expected %o, actual %o", *p.User.Umask, old))
	}

	nnp, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, 39 /* PR_GET_NO_NEW_PRIVS */, 0, 0, 0, 0, 0)
	ok(errno == 0 && (nnp == 1) == p.NoNewPrivileges, "process.noNewPrivileges",
		fmt.Sprintf("expected %v, actual %d", p.NoNewPrivileges, nnp))
}

func validateCapabilities(s *spec) {
	if s.Process.Capabilities == nil {
		return
	}
	c := s.Process.Capabilities
	st := procStatus()
	all := uint64(1)<<uint(lastCap()+1) - 1
	for _, set := range []struct {
		name, field string
		names       []string
	}{
		{"bounding", "CapBnd", c.Bounding}, {"effective", "CapEff", c.Effective},
		{"inheritable", "CapInh", c.Inheritable}, {"permitted", "CapPrm", c.Permitted},
		{"ambient", "CapAmb", c.Ambient},
	} {
		want, err := capMask(set.names)
		if err != nil {
			ok(false, "process.capabilities."+set.name, err.Error())
			continue
		}
		have, err := strconv.ParseUint(st[set.field], 16, 64)
		have &= all
		ok(err == nil && have == want, "process.capabilities."+set.name,
			fmt.Sprintf("expected [%s]\nactual   [%s]", capList(want), capList(have)))
	}
}

func validateRlimits(s *spec) {
	for _, r := range s.Process.Rlimits {
		res, known := rlimitTypes[r.Type]
		if !known {
			ok(false, "process.rlimits "+r.Type, "unknown rlimit type")
			continue
		}
		l := rlsave.Limits[res]
		ok(rlsave.Err[res] == nil && l.Cur == r.Soft && l.Max == r.Hard, "process.rlimits "+r.Type,
			fmt.Sprintf("expected soft %d hard %d, actual soft %d hard %d", r.Soft, r.Hard, l.Cur, l.Max))
	}
}

func validateOOMScoreAdj(s *spec) {
	if s.Process.OOMScoreAdj == nil {
		return
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	actual := strings.TrimSpace(string(b))
	ok(err == nil && actual == strconv.Itoa(*s.Process.OOMScoreAdj), "process.oomScoreAdj",
		fmt.Sprintf("expected %d, actual %s", *s.Process.OOMScoreAdj, actual))
}

func validateApparmor(s *spec) {
	if s.Process.ApparmorProfile == "" {
		return
	}
	b, err := os.ReadFile("/proc/self/attr/apparmor/current")
	actual := strings.TrimSpace(string(b))
	ok(err == nil && strings.HasPrefix(actual, s.Process.ApparmorProfile),
		"process.apparmorProfile", fmt.Sprintf("actual %q (%v)", actual, err))
}

func validateMounts(s *spec, infos []mountInfo) {
	for _, m := range s.Mounts {
		dest := filepath.Clean(m.Destination)
		found := false
		isBind := m.Type == "bind"
		for _, o := range m.Options {
			isBind = isBind || o == "bind" || o == "rbind"
		}
		for _, mi := range infos {
			if mi.mountpoint != dest {
				continue
			}
			if isBind || (mi.fstype == m.Type && (m.Type == "sysfs" || m.Type == "proc" ||
				m.Type == "devpts" || m.Type == "cgroup" || mi.source == m.Source)) {
				found = true
			}
		}
		ok(found, "mounts: "+dest+" is mounted as configured",
			fmt.Sprintf("expected type %q source %q at %q", m.Type, m.Source, dest))
	}
	// POSIX: the mounts are mounted in the order of the list.
	var order []int
	for _, m := range s.Mounts {
		last := -1
		for i, mi := range infos {
			if mi.mountpoint == filepath.Clean(m.Destination) {
				last = i
			}
		}
		order = append(order, last)
	}
	inOrder := sort.SliceIsSorted(order, func(i, j int) bool { return order[i] < order[j] })
	ok(inOrder, "mounts are mounted in the order of the configuration",
		fmt.Sprintf("mountinfo positions %v", order))
}

func validateDefaultFS(infos []mountInfo) {
	for _, pf := range [][2]string{{"/proc", "proc"}, {"/sys", "sysfs"},
		{"/dev/pts", "devpts"}, {"/dev/shm", "tmpfs"}} {
		path, fstype := pf[0], pf[1]
		found := false
		for _, mi := range infos {
			found = found || (mi.mountpoint == path && mi.fstype == fstype)
		}
		ok(found, "default filesystem "+path+" is "+fstype)
	}
}

func validateDefaultDevices(s *spec) {
	devs := []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
		"/dev/tty", "/dev/ptmx"}
	if s.Process.Terminal {
		devs = append(devs, "/dev/console")
	}
	for _, d := range devs {
		fi, err := os.Stat(d)
		ok(err == nil && fi.Mode()&os.ModeDevice != 0, "default device "+d,
			fmt.Sprintf("stat: %v", err))
	}
	for _, ld := range [][2]string{{"/dev/fd", "/proc/self/fd"},
		{"/dev/stdin", "/proc/self/fd/0"}, {"/dev/stdout", "/proc/self/fd/1"},
		{"/dev/stderr", "/proc/self/fd/2"}} {
		link, dest := ld[0], ld[1]
		actual, err := os.Readlink(link)
		ok(err == nil && actual == dest, "default symlink "+link,
			fmt.Sprintf("expected %q, actual %q (%v)", dest, actual, err))
	}
}

func validateDevices(s *spec) {
	for _, d := range s.Linux.Devices {
		fi, err := os.Stat(d.Path)
		if err != nil {
			ok(false, "linux.devices "+d.Path, err.Error())
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		var typ string
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFCHR:
			typ = "c"
		case syscall.S_IFBLK:
			typ = "b"
		case syscall.S_IFIFO:
			typ = "p"
		}
		var problems []string
		if typ != d.Type && !(d.Type == "u" && typ == "c") {
			problems = append(problems, fmt.Sprintf("type: expected %s, actual %s", d.Type, typ))
		}
		if typ != "p" {
			major := int64((st.Rdev >> 8) & 0xfff)
			minor := int64((st.Rdev & 0xff) | ((st.Rdev >> 12) & 0xfff00))
			if major != d.Major || minor != d.Minor {
				problems = append(problems, fmt.Sprintf("number: expected %d:%d, actual %d:%d",
					d.Major, d.Minor, major, minor))
			}
		}
		if d.FileMode != nil && uint32(fi.Mode().Perm()) != *d.FileMode&0o777 {
			problems = append(problems, fmt.Sprintf("mode: expected %o, actual %o",
				*d.FileMode&0o777, fi.Mode().Perm()))
		}
		if d.UID != nil && st.Uid != *d.UID {
			problems = append(problems, fmt.Sprintf("uid: expected %d, actual %d", *d.UID, st.Uid))
		}
		if d.GID != nil && st.Gid != *d.GID {
			problems = append(problems, fmt.Sprintf("gid: expected %d, actual %d", *d.GID, st.Gid))
		}
		ok(len(problems) == 0, "linux.devices "+d.Path, problems...)
	}
}

func validateMaskedPaths(s *spec) {
	for _, p := range s.Linux.MaskedPaths {
		fi, err := os.Stat(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			ok(false, "linux.maskedPaths "+p, err.Error())
			continue
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			ok(err != nil || len(entries) == 0, "linux.maskedPaths "+p,
				fmt.Sprintf("directory has %d entries", len(entries)))
			continue
		}
		f, err := os.Open(p)
		n := 0
		if err == nil {
			buf := make([]byte, 1)
			n, _ = f.Read(buf)
			f.Close()
		}
		ok(n == 0, "linux.maskedPaths "+p, "content is readable")
	}
}

func validateReadonlyPaths(s *spec) {
	for _, p := range s.Linux.ReadonlyPaths {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			continue
		}
		err := writable(p)
		ok(err != nil, "linux.readonlyPaths "+p, "is writable")
	}
}

func validateSysctl(s *spec) {
	keys := make([]string, 0, len(s.Linux.Sysctl))
	for k := range s.Linux.Sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := s.Linux.Sysctl[k]
		b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")))
		actual := strings.TrimSpace(string(b))
		ok(err == nil && actual == v, "linux.sysctl "+k,
			fmt.Sprintf("expected %q, actual %q (%v)", v, actual, err))
	}
}

func validateIDMappings(name, path string, want []idMapping) {
	if len(want) == 0 {
		return
	}
	b, err := os.ReadFile(path)
	var have []idMapping
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 {
			c, _ := strconv.ParseUint(f[0], 10, 32)
			h, _ := strconv.ParseUint(f[1], 10, 32)
			n, _ := strconv.ParseUint(f[2], 10, 32)
			have = append(have, idMapping{uint32(c), uint32(h), uint32(n)})
		}
	}
	same := err == nil && len(have) == len(want)
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		same = same && found
	}
	ok(same, "linux."+name, fmt.Sprintf("expected %v, actual %v (%v)", want, have, err))
}

func validateRootfsPropagation(s *spec, infos []mountInfo) {
	prop := s.Linux.RootfsPropagation
	if prop == "" {
		return
	}
	var root *mountInfo
	for i := range infos {
		if infos[i].mountpoint == "/" {
			root = &infos[i]
		}
	}
	if root == nil {
		ok(false, "linux.rootfsPropagation "+prop, "no mount at /")
		return
	}
	opt := root.optional
	var pass bool
	switch prop {
	case "shared", "rshared":
		pass = strings.Contains(opt, "shared:")
	case "slave", "rslave":
		pass = strings.Contains(opt, "master:")
	case "private", "rprivate":
		pass = !strings.Contains(opt, "shared:") && !strings.Contains(opt, "master:") &&
			!strings.Contains(opt, "unbindable")
	case "unbindable", "runbindable":
		pass = strings.Contains(opt, "unbindable")
	}
	ok(pass, "linux.rootfsPropagation "+prop, fmt.Sprintf("optional fields of /: %q", opt))
}

func validateSeccomp(s *spec) {
	if s.Linux.Seccomp == nil {
		return
	}
	mode := procStatus()["Seccomp"]
	ok(mode == "2", "linux.seccomp: the process is under a seccomp filter",
		fmt.Sprintf("Seccomp: %s", mode))
}

func main() {
	path := flag.String("path", "/", "directory of config.json")
	flag.Parse()
	fmt.Println("TAP version 13")
	b, err := os.ReadFile(filepath.Join(*path, "config.json"))
	var s spec
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil || s.Process == nil {
		ok(false, "config.json can be read", fmt.Sprint(err))
		fmt.Printf("1..%d\n", count)
		os.Exit(1)
	}
	infos, err := mounts()
	check("mountinfo can be read", err)
	validateRoot(&s)
	validateHostname(&s)
	validateProcess(&s)
	validateCapabilities(&s)
	validateRlimits(&s)
	validateOOMScoreAdj(&s)
	validateApparmor(&s)
	validateMounts(&s, infos)
	if s.Linux != nil {
		validateDefaultFS(infos)
		validateDefaultDevices(&s)
		validateDevices(&s)
		validateMaskedPaths(&s)
		validateReadonlyPaths(&s)
		validateSysctl(&s)
		validateIDMappings("uidMappings", "/proc/self/uid_map", s.Linux.UIDMappings)
		validateIDMappings("gidMappings", "/proc/self/gid_map", s.Linux.GIDMappings)
		validateRootfsPropagation(&s, infos)
		validateSeccomp(&s)
	}
	fmt.Printf("1..%d\n", count)
	if failed > 0 {
		os.Exit(1)
	}
}
