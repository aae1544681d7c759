package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpExamples: every command's --help has an Examples section.
func TestHelpExamples(t *testing.T) {
	root := newRootCmd(&globals{stdout: io.Discard, stderr: io.Discard})
	root.InitDefaultHelpCmd() // as Execute does
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || strings.HasPrefix(c.Name(), "__") {
			return
		}
		n++
		args := append(strings.Fields(c.CommandPath())[1:], "--help")
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("strata %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "\nExamples:\n") {
			t.Errorf("strata %s has no Examples section:\n%s", strings.Join(args, " "), stdout.String())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if n < 24 {
		t.Errorf("checked %d commands; the tree is missing some", n)
	}
}
