package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// requestSchemas checks the bodies the tests send against the served
// OpenAPI document: every JSON body the gateway accepts (a 2xx answer)
// must fit the request schema of its operation, and use no property the
// schema does not name, so that a request schema that drifts from what the
// handlers take fails the tests that use it. Bodies the gateway refuses
// are the tests' deliberate mistakes and are not checked.
type requestSchemas struct {
	router routers.Router
}

func loadRequestSchemas(url string) (*requestSchemas, error) {
	resp, err := http.Get(url + "/v1/openapi.json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read the served openapi document: %w", err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("load the served openapi document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the served openapi document is not valid: %w", err)
	}
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &requestSchemas{router: r}, nil
}

// Check returns why the JSON body of req, which the gateway accepted, does
// not fit its documented request schema, or nil.
func (rs *requestSchemas) Check(req *http.Request, body []byte) error {
	route, _, err := rs.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("%s %s is not in the OpenAPI document: %w", req.Method, req.URL.Path, err)
	}
	where := req.Method + " " + route.Path
	rb := route.Operation.RequestBody
	if rb == nil || rb.Value == nil {
		return fmt.Errorf("%s takes a body the OpenAPI document does not describe: %s", where, body)
	}
	mt := rb.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		return fmt.Errorf("%s takes a JSON body the OpenAPI document gives no schema for", where)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s: the body is not JSON: %w", where, err)
	}
	if err := mt.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("%s: the body does not fit the documented request schema: %v\n%s", where, err, body)
	}
	if extra := undeclared(mt.Schema.Value, v, ""); len(extra) > 0 {
		return fmt.Errorf("%s: the body uses properties the request schema does not name: %s\n%s", where, strings.Join(extra, ", "), body)
	}
	return nil
}

// CheckSchema is Check against a schema given directly, for tests of the
// check itself.
func CheckSchema(s *openapi3.Schema, body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	if err := s.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		return err
	}
	if extra := undeclared(s, v, ""); len(extra) > 0 {
		return fmt.Errorf("undeclared properties %s", strings.Join(extra, ", "))
	}
	return nil
}

// undeclared lists the properties of v, at any depth, that an object
// schema with named properties and no additionalProperties leaves out.
func undeclared(s *openapi3.Schema, v any, at string) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		if len(s.Properties) == 0 || s.AdditionalProperties.Schema != nil || s.AdditionalProperties.Has != nil && *s.AdditionalProperties.Has {
			return nil
		}
		for k, val := range x {
			p, ok := s.Properties[k]
			if !ok {
				out = append(out, at+k)
				continue
			}
			if p.Value != nil {
				out = append(out, undeclared(p.Value, val, at+k+".")...)
			}
		}
	case []any:
		if s.Items != nil && s.Items.Value != nil {
			for _, e := range x {
				out = append(out, undeclared(s.Items.Value, e, at+"[].")...)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
