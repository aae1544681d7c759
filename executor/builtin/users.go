package builtin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// usersOptions are the options of strata.users:
//
//	{"groups": {"name": {"gid": 100}},
//	 "users": {"name": {"uid": 1000, "gid": 1000, "home": "/home/name",
//	                    "shell": "/bin/sh", "groups": ["wheel"], "password": "!"}}}
//
// A group's gid and a user's uid are required. A user's gid defaults to its
// uid, home to "/home/NAME" ("/root" for root), shell to "/bin/sh", groups
// (supplementary groups, which must exist in /etc/group or in groups) to [],
// and password (the /etc/shadow hash; "!" locks the account) to "!".
//
// A user whose gid no group has gets its primary group, named after the user
// (as useradd's user private groups), so /etc/passwd never names a gid
// /etc/group lacks. The shadow lastchg field is the day of SOURCE_DATE_EPOCH,
// so images do not depend on the day they were built; before the first day
// it is empty (no password aging) rather than 0, which would force a
// password change at the first login.
type usersOptions struct {
	Groups map[string]groupSpec `json:"groups"`
	Users  map[string]userSpec  `json:"users"`
}

type groupSpec struct {
	GID *uint32 `json:"gid"`
}

type userSpec struct {
	UID      *uint32  `json:"uid"`
	GID      *uint32  `json:"gid"`
	Home     *string  `json:"home"`
	Shell    *string  `json:"shell"`
	Groups   []string `json:"groups"`
	Password *string  `json:"password"`
}

// Lines written when the tree has no such file.
const (
	rootPasswd = "root:x:0:0:root:/root:/bin/sh"
	rootGroup  = "root:x:0:"
)

// noHome is Debian's home for accounts that have none; it is never created.
const noHome = "/nonexistent"

var accountName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`) })

func checkAccountName(field, name string) error {
	if len(name) > 32 || !accountName().MatchString(name) {
		return fmt.Errorf("%s: %q is not a valid name (lower-case letters, digits, '_', '.', '-', starting with a letter or '_', at most 32 bytes)", field, name)
	}
	return nil
}

func checkField(field, v string) error {
	if strings.ContainsAny(v, ":\n\x00") {
		return fmt.Errorf("%s: %q must not contain ':' or a newline", field, v)
	}
	return nil
}

type user struct {
	name, home, shell, password string
	uid, gid                    uint32
	groups                      []string
}

func runUsers(ctx context.Context, options []byte, env Env) error {
	var o usersOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	groupNames := slices.Sorted(maps.Keys(o.Groups))
	for _, name := range groupNames {
		field := fmt.Sprintf("groups[%q]", name)
		if err := checkAccountName(field, name); err != nil {
			return err
		}
		g := o.Groups[name].GID
		if g == nil {
			return fmt.Errorf("%s.gid: required", field)
		}
		if *g > maxID {
			return fmt.Errorf("%s.gid: %d is not a valid id", field, *g)
		}
	}
	var users []user
	for _, name := range slices.Sorted(maps.Keys(o.Users)) {
		field := fmt.Sprintf("users[%q]", name)
		s := o.Users[name]
		if err := checkAccountName(field, name); err != nil {
			return err
		}
		if s.UID == nil {
			return fmt.Errorf("%s.uid: required", field)
		}
		u := user{name: name, uid: *s.UID, gid: or(s.GID, *s.UID), shell: or(s.Shell, "/bin/sh"), password: or(s.Password, "!")}
		u.home = "/home/" + name
		if name == "root" {
			u.home = "/root"
		}
		u.home = or(s.Home, u.home)
		if u.uid > maxID {
			return fmt.Errorf("%s.uid: %d is not a valid id", field, u.uid)
		}
		if u.gid > maxID {
			return fmt.Errorf("%s.gid: %d is not a valid id", field, u.gid)
		}
		if _, err := treePath(field+".home", u.home); err != nil {
			return err
		}
		if !strings.HasPrefix(u.shell, "/") {
			return fmt.Errorf("%s.shell: %q is not an absolute path", field, u.shell)
		}
		for _, c := range []struct{ f, v string }{{"home", u.home}, {"shell", u.shell}, {"password", u.password}} {
			if err := checkField(field+"."+c.f, c.v); err != nil {
				return err
			}
		}
		for i, g := range s.Groups {
			if err := checkAccountName(fmt.Sprintf("%s.groups[%d]", field, i), g); err != nil {
				return err
			}
			if !slices.Contains(u.groups, g) {
				u.groups = append(u.groups, g)
			}
		}
		users = append(users, u)
	}

	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()

	lastchg := ""
	if days := env.SourceDateEpoch / 86400; days > 0 {
		lastchg = strconv.FormatInt(days, 10)
	}
	passwd, err := loadDB(t, "etc/passwd", []string{rootPasswd})
	if err != nil {
		return err
	}
	group, err := loadDB(t, "etc/group", []string{rootGroup})
	if err != nil {
		return err
	}
	shadow, err := loadDB(t, "etc/shadow", []string{"root:*:" + lastchg + ":0:99999:7:::"})
	if err != nil {
		return err
	}
	gshadow, err := loadDB(t, "etc/gshadow", nil)
	if err != nil {
		return err
	}

	for _, name := range groupNames {
		gid := *o.Groups[name].GID
		f := group.fields(name, 4)
		if f == nil {
			f = []string{name, "x", "", ""}
		}
		f[2] = strconv.FormatUint(uint64(gid), 10)
		group.put(name, gid, f)
		if gshadow.exists {
			if gshadow.fields(name, 4) == nil {
				gshadow.put(name, gid, []string{name, "!", "", ""})
			}
		}
	}
	for _, u := range users {
		if group.hasID(u.gid) {
			continue
		}
		if f := group.fields(u.name, 4); f != nil {
			return fmt.Errorf("users[%q].gid: no group has gid %d, and the group %q that would be its primary group has gid %s; add a group with gid %d",
				u.name, u.gid, u.name, f[2], u.gid)
		}
		group.put(u.name, u.gid, []string{u.name, "x", strconv.FormatUint(uint64(u.gid), 10), ""})
		if gshadow.exists && gshadow.fields(u.name, 4) == nil {
			gshadow.put(u.name, u.gid, []string{u.name, "!", "", ""})
		}
	}
	for _, u := range users {
		gecos := ""
		if f := passwd.fields(u.name, 7); f != nil {
			gecos = f[4]
		}
		passwd.put(u.name, u.uid, []string{u.name, "x", strconv.FormatUint(uint64(u.uid), 10),
			strconv.FormatUint(uint64(u.gid), 10), gecos, u.home, u.shell})
		shadow.put(u.name, u.uid, []string{u.name, u.password, lastchg, "0", "99999", "7", "", "", ""})
	}
	for _, u := range users {
		for _, g := range u.groups {
			f := group.fields(g, 4)
			if f == nil {
				return fmt.Errorf("users[%q].groups: group %q is neither in /etc/group nor in groups", u.name, g)
			}
			f[3] = addMember(f[3], u.name)
			group.set(g, f)
			if f := gshadow.fields(g, 4); f != nil {
				f[3] = addMember(f[3], u.name)
				gshadow.set(g, f)
			}
		}
	}

	for _, w := range []struct {
		db   *db
		rel  string
		mode uint32
	}{{passwd, "etc/passwd", 0o644}, {group, "etc/group", 0o644}, {shadow, "etc/shadow", 0o600}, {gshadow, "etc/gshadow", 0o600}} {
		if !w.db.exists && w.db.empty() {
			continue
		}
		if err := t.replaceFile(w.rel, w.db.render(), w.mode, rootOwner, true); err != nil {
			return err
		}
	}

	for _, u := range users {
		if err := makeHome(t, u); err != nil {
			return fmt.Errorf("users[%q].home: %w", u.name, err)
		}
	}
	return ctx.Err()
}

// makeHome creates a missing home directory (parents 0755) owned by the user
// with mode 0700. An existing home, "/" and "/nonexistent" are left alone.
func makeHome(t *fsys, u user) error {
	if u.home == noHome {
		return nil
	}
	rel, err := treePath("home", u.home)
	if err != nil || rel == "." {
		return err
	}
	full, err := t.locate(rel, true)
	if err != nil {
		return err
	}
	if _, err := t.root.Lstat(full); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := t.root.Mkdir(full, 0o700); err != nil {
		return err
	}
	return t.setAttrs(full, 0o700, owner{int(u.uid), int(u.gid), true})
}

func addMember(members, name string) string {
	if members == "" {
		return name
	}
	if slices.Contains(strings.Split(members, ","), name) {
		return members
	}
	return members + "," + name
}

// db is a colon-separated account file: its existing lines in order (edited
// in place) and the new entries, rendered after them sorted by id then name.
type db struct {
	exists bool
	lines  []string
	index  map[string]int // name -> index in lines
	added  map[string]addedLine
}

type addedLine struct {
	id   uint32
	line string
}

// loadDB reads the account file rel; a missing file starts with initial.
func loadDB(t *fsys, rel string, initial []string) (*db, error) {
	data, ok, err := t.readFile(rel)
	if err != nil {
		return nil, err
	}
	d := &db{exists: ok, index: map[string]int{}, added: map[string]addedLine{}}
	if ok {
		s := strings.TrimSuffix(string(data), "\n")
		if s != "" {
			d.lines = strings.Split(s, "\n")
		}
	} else {
		d.lines = slices.Clone(initial)
	}
	for i, l := range d.lines {
		name, _, ok := strings.Cut(l, ":")
		if _, dup := d.index[name]; ok && !dup && name != "" && !strings.HasPrefix(name, "#") {
			d.index[name] = i
		}
	}
	return d, nil
}

func (d *db) empty() bool { return len(d.lines) == 0 && len(d.added) == 0 }

// hasID reports whether an entry has the numeric id (third field) id.
func (d *db) hasID(id uint32) bool {
	want := strconv.FormatUint(uint64(id), 10)
	match := func(line string) bool {
		f := strings.SplitN(line, ":", 4)
		return len(f) >= 3 && f[2] == want && !strings.HasPrefix(line, "#")
	}
	for _, l := range d.lines {
		if match(l) {
			return true
		}
	}
	for _, a := range d.added {
		if match(a.line) {
			return true
		}
	}
	return false
}

// fields returns the fields of name's entry, padded to at least n, or nil.
func (d *db) fields(name string, n int) []string {
	var line string
	if a, ok := d.added[name]; ok {
		line = a.line
	} else if i, ok := d.index[name]; ok {
		line = d.lines[i]
	} else {
		return nil
	}
	f := strings.Split(line, ":")
	for len(f) < n {
		f = append(f, "")
	}
	return f
}

// put adds or replaces name's entry; a new entry sorts by id.
func (d *db) put(name string, id uint32, f []string) {
	if i, ok := d.index[name]; ok {
		d.lines[i] = strings.Join(f, ":")
		return
	}
	d.added[name] = addedLine{id, strings.Join(f, ":")}
}

// set replaces the fields of an existing entry (old or added).
func (d *db) set(name string, f []string) {
	if a, ok := d.added[name]; ok {
		d.added[name] = addedLine{a.id, strings.Join(f, ":")}
		return
	}
	d.put(name, 0, f)
}

func (d *db) render() []byte {
	names := slices.SortedFunc(maps.Keys(d.added), func(a, b string) int {
		return cmp.Or(cmp.Compare(d.added[a].id, d.added[b].id), strings.Compare(a, b))
	})
	var b strings.Builder
	for _, l := range d.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for _, n := range names {
		b.WriteString(d.added[n].line)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
