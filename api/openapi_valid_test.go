package api

import (
	"context"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIValid checks the served document with a real OpenAPI
// validator, and that every operation has an operationId and a tag.
func TestOpenAPIValid(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPIDoc)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	ids := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || len(op.Tags) == 0 {
				t.Errorf("%s %s has no operationId or no tag", method, path)
			}
			if ids[op.OperationID] {
				t.Errorf("operationId %s is used twice", op.OperationID)
			}
			ids[op.OperationID] = true
		}
	}
}
