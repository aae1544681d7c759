package registry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
)

// RequestFromBuild makes the publish request for an image from a finished
// build (for strata push --to of an image without publish: in its spec, which
// has no publish node for the executor to run): each output's artifacts as
// the build recorded them, described from the store.
func RequestFromBuild(p *plan.Plan, name string, res *executor.BuildResult, st *store.Store) (executor.PublishRequest, error) {
	img, ok := p.Images[name]
	if !ok {
		return executor.PublishRequest{}, fmt.Errorf("no image %q", name)
	}
	byID := map[string]*executor.NodeResult{}
	for _, n := range res.Nodes {
		byID[n.ID] = n
	}
	req := executor.PublishRequest{Plan: p, Image: img, Store: st}
	for _, id := range img.Outputs {
		n, ok := p.Node(id)
		nr := byID[id]
		if !ok || nr == nil || nr.Status != executor.StatusBuilt && nr.Status != executor.StatusCached {
			return executor.PublishRequest{}, fmt.Errorf("output %s of %s was not built", id, name)
		}
		r := executor.Result{Outputs: map[string]ocispec.Descriptor{}}
		for file, d := range nr.Outputs {
			path, err := st.BlobPath(d)
			if err != nil {
				return executor.PublishRequest{}, err
			}
			fi, err := os.Stat(path)
			if err != nil {
				return executor.PublishRequest{}, fmt.Errorf("output %s of %s: %w", file, name, err)
			}
			r.Outputs[file] = ocispec.Descriptor{MediaType: mediaTypeOf(n.Type), Digest: d, Size: fi.Size()}
		}
		req.Outputs = append(req.Outputs, executor.PublishedOutput{Node: n, Result: r})
	}
	return req, nil
}

// GitInfo returns the source URL (remote origin, without any credentials it
// holds) and the commit of the git checkout dir is in, for the
// org.opencontainers.image.source and .revision annotations; empty strings
// when dir is not a git checkout or git is missing.
func GitInfo(ctx context.Context, dir string) (source, revision string) {
	git := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	if git("rev-parse", "--is-inside-work-tree") != "true" {
		return "", ""
	}
	return redactURL(git("config", "--get", "remote.origin.url")), git("rev-parse", "HEAD")
}
