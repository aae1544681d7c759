// Command gen writes a synthetic strata workspace for the compile benchmark: N
// images of 8 stages each (a mix of the built-in stage types with options), a
// user stage module, and a template over a resource of N records whose instances
// are small images, so both the plain and the template paths are exercised.
//
//	go run ./bench/gen -n 1000 -o bench/out/ws-1000
//
// The spec imports strata.build/strata and embeds strata.#Workspace, so the
// upstream `cue export` of the package does the same schema validation as strata
// (run `strata mod vendor` in the directory first).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	n := flag.Int("n", 100, "number of images (and of template records)")
	out := flag.String("o", "", "workspace directory to write (created)")
	flag.Parse()
	if *out == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: gen -n N -o DIR")
		os.Exit(2)
	}
	if err := write(*out, *n); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(dir string, n int) error {
	if err := os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"),
		[]byte("module: \"example.com/bench\"\nlanguage: version: \"v0.17.1\"\n"), 0o644); err != nil {
		return err
	}
	files := []struct {
		name string
		gen  func(w *bufio.Writer, n int)
	}{
		{"workspace.cue", header},
		{"images.cue", images},
		{"devices.cue", devices},
	}
	for _, f := range files {
		fh, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		w := bufio.NewWriter(fh)
		f.gen(w, n)
		if err := w.Flush(); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return err
		}
	}
	return nil
}

func header(w *bufio.Writer, n int) {
	fmt.Fprint(w, `package bench

import "strata.build/strata"

strata.#Workspace

// A user stage type: a CUE option schema and a command interpolating it.
stages: "acme.motd": {
	doc: "Write /etc/motd naming the device and its site."
	options: {
		device: string
		site:   *"lab" | "home" | "office"
		rack:   int & >=0 | *0
	}
	command: ["/bin/sh", "-c", "mkdir -p /run/strata/tree/etc && echo '\(options.device) at \(options.site)/\(options.rack)' > /run/strata/tree/etc/motd"]
}

hooks: "size-check": {
	on: "post-build"
	command: ["/bin/sh", "-c", "du -s /run/strata/outputs"]
	on_failure: "warn"
}

templates: "per-device": {
	resource: "devices"
	each: {
		d: _
		if: d.enabled
		images: "dev-\(d.name)": {
			version: "1.\(d.rev).0"
			platform: arch: d.arch
			from: "images.\(d.base)"
			device_types: [d.type]
			stages: [
				{type: "strata.hostname", options: hostname: d.name},
				{type: "acme.motd", options: {device: d.name, site: d.site, rack: d.rack}},
			]
			outputs: [{type: "squashfs"}]
		}
	}
}
`)
}

func name(i int) string { return fmt.Sprintf("img-%05d", i) }

func images(w *bufio.Writer, n int) {
	fmt.Fprint(w, "package bench\n\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "images: %q: {\n", name(i))
		fmt.Fprintf(w, "\tversion: \"1.%d.%d\"\n", i%7, i%13)
		if i%3 == 1 {
			fmt.Fprint(w, "\tplatform: arch: \"arm64\"\n")
		}
		fmt.Fprintf(w, "\tdevice_types: [\"board-%d\", \"board-%d/rev%d\"]\n", i%17, i%17, i%3)
		if i%10 == 0 {
			fmt.Fprint(w, "\tdefault: true\n")
		}
		if i > 0 && i%4 == 0 {
			fmt.Fprintf(w, "\tfrom: \"images.%s\"\n", name(i-1))
		}
		fmt.Fprint(w, "\tstages: [\n")
		fmt.Fprint(w, "\t\t{type: \"strata.busybox\", options: applets: [\"sh\", \"ls\", \"cat\", \"mount\"]},\n")
		fmt.Fprintf(w, "\t\t{type: \"strata.hostname\", options: hostname: \"host-%d\"},\n", i)
		fmt.Fprintf(w, "\t\t{type: \"strata.users\", options: {\n\t\t\tgroups: wheel: gid: 10\n\t\t\tusers: {\n\t\t\t\tadmin: {uid: 1000, groups: [\"wheel\"]}\n\t\t\t\t\"svc%d\": {uid: %d, shell: \"/sbin/nologin\"}\n\t\t\t}\n\t\t}},\n", i%50, 2000+i%50)
		fmt.Fprintf(w, "\t\t{type: \"strata.files\", options: {\n\t\t\tdirs: {\"/etc/app\": {}, \"/var/lib/app\": mode: 0o700, \"/tmp\": mode: 0o1777}\n\t\t\tfiles: {\n\t\t\t\t\"/etc/app/config.toml\": content: \"id = %d\\nname = \\\"%s\\\"\\n\"\n\t\t\t\t\"/etc/motd\": {content: \"Welcome to %s\\n\", mode: 0o644}\n\t\t\t\t\"/etc/app/secret\": {content: \"s%d\", mode: 0o600, uid: 1000, gid: 10}\n\t\t\t}\n\t\t\tsymlinks: \"/usr/bin/app\": \"/opt/app/bin/app\"\n\t\t}},\n", i, name(i), name(i), i)
		fmt.Fprintf(w, "\t\t{type: \"strata.run\", options: {command: [\"/bin/sh\", \"-c\", \"echo %d > /run/strata/tree/etc/build-id\"], env: {BUILD_ID: \"%d\", LANG: \"C.UTF-8\"}}},\n", i, i)
		fmt.Fprintf(w, "\t\t{type: \"strata.files\", options: files: \"/etc/issue\": content: \"%s \\\\n \\\\l\\n\"},\n", name(i))
		fmt.Fprint(w, "\t\t{type: \"strata.run\", options: {command: [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"], chroot: true}},\n")
		fmt.Fprintf(w, "\t\t{type: \"strata.files\", options: dirs: \"/srv/data-%d\": {mode: 0o750, uid: 1000, gid: 10}},\n", i%9)
		fmt.Fprint(w, "\t]\n")
		switch i % 3 {
		case 0:
			fmt.Fprint(w, "\toutputs: [{type: \"tar\"}]\n")
		case 1:
			fmt.Fprint(w, "\toutputs: [{type: \"tar.zst\"}, {type: \"squashfs\"}]\n")
		default:
			fmt.Fprint(w, "\toutputs: [{type: \"ext4\", size: 67108864}]\n")
		}
		if i%5 == 0 {
			fmt.Fprint(w, "\thooks: [\"size-check\"]\n")
			fmt.Fprintf(w, "\tpublish: {repository: \"bench/%s\", tags: [\"1.%d\", \"stable\"]}\n", name(i), i%7)
		}
		if i%6 == 0 {
			fmt.Fprintf(w, "\tannotations: {\"org.example.team\": \"team-%d\", \"org.example.tier\": \"gold\"}\n", i%4)
		}
		fmt.Fprint(w, "}\n\n")
	}
}

func devices(w *bufio.Writer, n int) {
	sites := []string{"lab", "home", "office"}
	archs := []string{"amd64", "arm64", "amd64"}
	fmt.Fprint(w, "package bench\n\nresources: devices: [\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "\t{name: \"d%05d\", type: \"board-%d\", arch: %q, site: %q, rack: %d, rev: %d, base: %q, enabled: %t},\n",
			i, i%17, archs[i%3], sites[i%3], i%40, i%5, name(i), i%10 != 9)
	}
	fmt.Fprint(w, "]\n")
}
