package federation

import "net/http"

// Exported for the tests, which play a coordinator that misbehaves.
type (
	ShareRequest   = shareRequest
	ShareResponse  = shareResponse
	SwitchRequest  = switchRequest
	SwitchResponse = switchResponse
)

// Call is the coordinator's request function.
var Call = call

// HTTPClient is the coordinator's mutual-TLS client.
func (c *Coordinator) HTTPClient() *http.Client { return c.client }

// Round is the coordinator's current key round.
func (c *Coordinator) Round() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.round
}
