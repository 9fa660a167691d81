package corefile

import (
	"strings"
	"testing"
)

const (
	cid  = "3f1c5d2b9a8e7f6d5c4b3a29181716151413121110fedcba9876543210abcdef"
	cid2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	puid = "5d8e2b1a-7c3f-4e6a-9b0d-1f2e3d4c5b6a"
	// The systemd cgroup driver writes the pod UID with underscores.
	puidSystemd = "5d8e2b1a_7c3f_4e6a_9b0d_1f2e3d4c5b6a"
	staticUID   = "0f3c9a7e5d1b2c4a6e8f0a1b2c3d4e5f"
)

func TestContainerID(t *testing.T) {
	tests := []struct {
		name   string
		cgroup string
		want   CgroupInfo
		wantOK bool
	}{
		{
			name:   "containerd, systemd driver, cgroup v2",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + puidSystemd + ".slice/cri-containerd-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd, PodUID: puid}, wantOK: true,
		},
		{
			name:   "containerd, guaranteed pod, cgroup v2",
			cgroup: "0::/kubepods.slice/kubepods-pod" + puidSystemd + ".slice/cri-containerd-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd, PodUID: puid}, wantOK: true,
		},
		{
			name:   "cgroupfs driver, cgroup v2 (k3s)",
			cgroup: "0::/kubepods/besteffort/pod" + puid + "/" + cid + "\n",
			want:   CgroupInfo{ID: cid, PodUID: puid}, wantOK: true,
		},
		{
			name: "cgroupfs driver, cgroup v1, every controller",
			cgroup: strings.Join([]string{
				"12:hugetlb:/kubepods/burstable/pod" + puid + "/" + cid,
				"11:pids:/kubepods/burstable/pod" + puid + "/" + cid,
				"10:memory:/kubepods/burstable/pod" + puid + "/" + cid,
				"9:cpu,cpuacct:/kubepods/burstable/pod" + puid + "/" + cid,
				"8:net_cls,net_prio:/kubepods/burstable/pod" + puid + "/" + cid,
				"1:name=systemd:/kubepods/burstable/pod" + puid + "/" + cid,
				"0::/",
			}, "\n") + "\n",
			want: CgroupInfo{ID: cid, PodUID: puid}, wantOK: true,
		},
		{
			name: "CRI-O, systemd driver, cgroup v1 with rdma line at root",
			cgroup: "13:rdma:/\n" +
				"12:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + puidSystemd + ".slice/crio-" + cid + ".scope\n" +
				"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + puidSystemd + ".slice/crio-" + cid + ".scope\n" +
				"0::/\n",
			want: CgroupInfo{ID: cid, Runtime: RuntimeCRIO, PodUID: puid}, wantOK: true,
		},
		{
			name:   "CRI-O conmon in the pod slice is not the container",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + puidSystemd + ".slice/crio-conmon-" + cid + ".scope\n",
			want:   CgroupInfo{PodUID: puid}, wantOK: false,
		},
		{
			name:   "CRI-O conmon in system.slice",
			cgroup: "0::/system.slice/crio-conmon-" + cid + ".scope\n",
			want:   CgroupInfo{}, wantOK: false,
		},
		{
			name:   "docker, systemd driver",
			cgroup: "0::/system.slice/docker-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeDocker}, wantOK: true,
		},
		{
			name: "docker, cgroupfs driver, cgroup v1",
			cgroup: "11:devices:/docker/" + cid + "\n" +
				"4:memory:/docker/" + cid + "\n" +
				"1:name=systemd:/docker/" + cid + "\n",
			want: CgroupInfo{ID: cid, Runtime: RuntimeDocker}, wantOK: true,
		},
		{
			name:   "docker-in-docker: the outer container is the one the node knows",
			cgroup: "0::/docker/" + cid + "/docker/" + cid2 + "\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeDocker}, wantOK: true,
		},
		{
			name:   "sub-cgroup inside the container",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + puidSystemd + ".slice/cri-containerd-" + cid + ".scope/init.scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd, PodUID: puid}, wantOK: true,
		},
		{
			name:   "read from another cgroup namespace",
			cgroup: "0::/../../kubepods-besteffort-pod" + puidSystemd + ".slice/cri-containerd-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd, PodUID: puid}, wantOK: true,
		},
		{
			name:   "static pod with a hash UID",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + staticUID + ".slice/cri-containerd-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd, PodUID: staticUID}, wantOK: true,
		},
		{
			name:   "pod-level cgroup (the sandbox's pause process)",
			cgroup: "0::/kubepods/burstable/pod" + puid + "\n",
			want:   CgroupInfo{PodUID: puid}, wantOK: false,
		},
		{
			name:   "bare ID outside Kubernetes",
			cgroup: "0::/custom/" + cid + "\n",
			want:   CgroupInfo{ID: cid}, wantOK: true,
		},
		{
			name:   "host process, cgroup v2",
			cgroup: "0::/system.slice/kubelet.service\n",
			want:   CgroupInfo{}, wantOK: false,
		},
		{
			name:   "host process, user session",
			cgroup: "0::/user.slice/user-1000.slice/session-2.scope\n",
			want:   CgroupInfo{}, wantOK: false,
		},
		{
			name:   "uppercase or short IDs are not container IDs",
			cgroup: "0::/system.slice/docker-" + strings.ToUpper(cid) + ".scope\n1:name=systemd:/docker/abc123\n",
			want:   CgroupInfo{}, wantOK: false,
		},
		{
			name:   "path with colons and CRLF",
			cgroup: "0::/weird:path/cri-containerd-" + cid + ".scope\r\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeContainerd}, wantOK: true,
		},
		{
			name:   "a runtime-specific line beats a bare ID on an earlier line",
			cgroup: "2:cpu:/custom/" + cid2 + "\n0::/system.slice/docker-" + cid + ".scope\n",
			want:   CgroupInfo{ID: cid, Runtime: RuntimeDocker}, wantOK: true,
		},
		{name: "empty", cgroup: "", want: CgroupInfo{}, wantOK: false},
		{name: "garbage", cgroup: "not a cgroup file\x00\xff", want: CgroupInfo{}, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ContainerID([]byte(tt.cgroup))
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("ContainerID = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
