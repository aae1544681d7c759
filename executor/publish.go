package executor

import (
	"context"
	"fmt"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/store"
)

// Publisher publishes an image: it runs the image's publish node (push its
// outputs to a registry). The registry package implements it; the executor
// never imports the registry.
type Publisher interface {
	Publish(ctx context.Context, req PublishRequest) (Result, error)
}

// PublishRequest is one image to publish.
type PublishRequest struct {
	// Plan is the verified plan; Node the publish node; Image the image.
	Plan  *plan.Plan
	Node  *plan.Node
	Image *plan.Image
	// Outputs are the image's outputs, in the image's order, with their results.
	Outputs []PublishedOutput
	// Store holds their content.
	Store *store.Store
}

// PublishedOutput is an output of the image being published.
type PublishedOutput struct {
	Node   *plan.Node
	Result Result
}

// publish runs a publish node through the publisher: never cached (a push is a
// side effect, and a registry answers "already there" cheaply).
func publish(ctx context.Context, pub Publisher, st *store.Store, p *plan.Plan, n *plan.Node, in Inputs) (Result, error) {
	if pub == nil {
		return Result{}, ErrNotImplemented
	}
	var img *plan.Image
	for _, i := range p.Images {
		if i.Publish == n.ID {
			img = i
			break
		}
	}
	if img == nil {
		return Result{}, fmt.Errorf("publish node %s belongs to no image", n.Name)
	}
	req := PublishRequest{Plan: p, Node: n, Image: img, Store: st}
	for _, id := range img.Outputs {
		res, ok := in[id]
		if !ok {
			return Result{}, fmt.Errorf("output %s of %s was not built", id, img.Name)
		}
		on, _ := p.Node(id)
		req.Outputs = append(req.Outputs, PublishedOutput{Node: on, Result: res})
	}
	return pub.Publish(ctx, req)
}
