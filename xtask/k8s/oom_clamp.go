// +build !dockerless

// Berth's one change to the kubelet it tests against (added by `cargo xtask k8s-env`).
//
// Dockershim asks Docker for a negative oom_score_adj on every pod sandbox (-998) and on the
// containers of Guaranteed pods (-997). Lowering oom_score_adj below 0 needs CAP_SYS_RESOURCE; on
// hosts whose capability bounding set lacks it, runc fails every such container ("can't get final
// child's PID from pipe: EOF") and no pod can start. There, and only there, negative values are
// clamped to 0; with CAP_SYS_RESOURCE the kubelet behaves exactly as upstream.

package dockershim

import (
	"io/ioutil"
	"strconv"
	"strings"
	"sync"

	"k8s.io/klog/v2"
)

// capSysResourceBit is CAP_SYS_RESOURCE's bit in /proc/<pid>/status capability masks.
const capSysResourceBit = 24

var (
	oomClampOnce   sync.Once
	oomClampNeeded bool
)

// effectiveCapabilities returns this process's CapEff mask, or all bits set when it cannot be
// read (then nothing is clamped: upstream behaviour).
func effectiveCapabilities() uint64 {
	status, err := ioutil.ReadFile("/proc/self/status")
	if err != nil {
		return ^uint64(0)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if !strings.HasPrefix(line, "CapEff:") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapEff:")), 16, 64)
		if err != nil {
			return ^uint64(0)
		}
		return mask
	}
	return ^uint64(0)
}

// oomScoreAdjForDocker returns the oom_score_adj to ask Docker for: adj itself, or 0 when adj is
// negative and this kubelet lacks CAP_SYS_RESOURCE (so the container could not start at all).
func oomScoreAdjForDocker(adj int) int {
	oomClampOnce.Do(func() {
		oomClampNeeded = effectiveCapabilities()&(1<<capSysResourceBit) == 0
		if oomClampNeeded {
			klog.Warningf("kubelet lacks CAP_SYS_RESOURCE: negative oom_score_adj values are set to 0 (berth test patch)")
		}
	})
	if adj < 0 && oomClampNeeded {
		return 0
	}
	return adj
}
