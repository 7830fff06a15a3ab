package luavm

import "fmt"

// RouteInfo is one route a script defined, as admin and keystone.Routes
// list it.
type RouteInfo struct {
	Method string
	// Pattern is the route's full chi pattern, the tenant's path prefix
	// included.
	Pattern string
	// Source is FILE:LINE of the script line that defined the route.
	Source string
	// Runtime is set for a route added by keystone.AddRoute.
	Runtime bool
}

// Routes returns the routes the script defined when it loaded, in the
// order they were registered, then those added at run time
// (keystone.AddRoute). The result is owned by the caller.
func (s *Script) Routes() []RouteInfo {
	return append(append([]RouteInfo(nil), s.routeInfo...), s.runtimeInfo()...)
}

// noteRoute records a route registered by defineRoutes.
func (s *Script) noteRoute(method, pattern string, at pos) {
	src := ""
	if at.file != "" {
		src = fmt.Sprintf("%s:%d", at.file, at.line)
	}
	s.routeInfo = append(s.routeInfo, RouteInfo{Method: method, Pattern: pattern, Source: src})
}
