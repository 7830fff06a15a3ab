package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"testing"
)

// svgPaths parses svg as XML (failing the test when it is not well-formed)
// and returns scenario → targets of its <path data-target> lines.
func svgPaths(t *testing.T, svg []byte) map[string][]string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	paths := map[string][]string{}
	sawRoot := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("latency.svg is not well-formed XML: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if se.Name.Local == "svg" {
			sawRoot = true
		}
		if se.Name.Local != "path" {
			continue
		}
		var target, scenario string
		for _, a := range se.Attr {
			switch a.Name.Local {
			case "data-target":
				target = a.Value
			case "data-scenario":
				scenario = a.Value
			}
		}
		if target != "" {
			paths[scenario] = append(paths[scenario], target)
		}
	}
	if !sawRoot {
		t.Fatal("no <svg> root element")
	}
	return paths
}

func curveOf(scale float64) [][2]float64 {
	var c [][2]float64
	for _, p := range curvePoints() {
		c = append(c, [2]float64{p, scale * (100 + p)})
	}
	return c
}

func TestSVGHasOnePathPerTargetPerScenario(t *testing.T) {
	t.Parallel()
	r := &Report{Scenarios: []*ScenarioReport{
		{Name: "get-100b", Mode: "closed", Summary: []Summary{
			{Target: "keystone", Curve: curveOf(1)}, {Target: "nginx", Curve: curveOf(0.8)}, {Target: "haproxy", Curve: curveOf(0.9)},
		}},
		{Name: `odd <name> & "quotes"`, Mode: "open", Rate: 5000, Summary: []Summary{
			{Target: "keystone", Curve: curveOf(10)}, {Target: "nginx", Curve: curveOf(1000)},
		}},
		{Name: "idle", Mode: "idle", Summary: []Summary{{Target: "keystone", RSSKiB: 1}}},
		{Name: "h2", Skipped: "http/2 not implemented yet"},
	}}
	paths := svgPaths(t, []byte(renderSVG(r)))
	want := map[string]int{"get-100b": 3, `odd <name> & "quotes"`: 2}
	if len(paths) != len(want) {
		t.Errorf("panels %v, want %v (idle and skipped scenarios have no latency lines)", paths, want)
	}
	for sc, n := range want {
		if len(paths[sc]) != n {
			t.Errorf("%s: paths for %v, want %d targets", sc, paths[sc], n)
		}
	}
}

func TestSVGWithNoLatencyIsStillWellFormed(t *testing.T) {
	t.Parallel()
	svgPaths(t, []byte(renderSVG(&Report{})))
}
