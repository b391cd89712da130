// ferry's changed block tracking for the lab vCenter (compiled into govmomi's package simulator).
//
// Disk bytes live outside the simulator, in one directory per VM (named by its instance UUID):
//
//	<disks>/<instanceUuid>/disk-<key>.raw        live disk: a sparse raw file the lab's guest writes change
//	<disks>/<instanceUuid>/disk-<key>.journal    change journal: one "offset length" line per guest write
//	<disks>/<instanceUuid>/disk-<key>.cbt        CBT epoch while tracking is on: "<uuid>\n<base sequence>\n"
//	<disks>/<instanceUuid>/disk-<key>.stun       journal length at the VM's last stun point
//	<disks>/<instanceUuid>/snapshots/<moref>/    a snapshot: frozen disk-<key>.raw copies and meta.json
//
// Writers (ferry lab write) and this extension take flock(2) on the journal, so a snapshot freezes
// the disk bytes and the journal position together. A changeId is "<epoch uuid>/<sequence>", the
// sequence being the journal length when the snapshot froze the disk. Turning tracking off or on
// drops the epoch, so the next snapshot starts a new one and older changeIds fault, as on vSphere.
//
// As on vSphere, a running VM's live disk changeId moves at stun points only (snapshot create or
// remove, power on/off/suspend), not at every guest write: between them it stays at the journal
// length of the last stun point, though the disk changed. A VM that is not running reports the
// journal's length (a write to its disk opens and closes it, which moves the changeId).
//
// VMware Tools run in a powered-on VM whose extraConfig has ferry.lab.tools = "true"; ShutdownGuest
// faults with ToolsUnavailable in any other VM, as vSphere does.
package simulator

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

type ferryDiskMeta struct {
	Seq      int64  `json:"seq"`
	Epoch    string `json:"epoch,omitempty"`
	Base     int64  `json:"base"`
	Capacity int64  `json:"capacity"`
	Thin     bool   `json:"thin"`
	Frozen   bool   `json:"frozen"`
}

type ferrySnapshotMeta struct {
	VM    string                   `json:"vm"`
	Disks map[string]ferryDiskMeta `json:"disks"`
}

type ferryCBT struct {
	self     types.ManagedObjectReference
	dir      string
	maxAreas int
	window   int64

	mu        sync.Mutex
	snapshots map[types.ManagedObjectReference]string
	born      map[types.ManagedObjectReference]int64 // frozen snapshots, in order (ferry_folder.go)
}

// FerryCBT is the extension's single instance; main configures it after the model exists.
var FerryCBT = &ferryCBT{
	self:      types.ManagedObjectReference{Type: "FerryCBT", Value: "ferry-cbt"},
	snapshots: make(map[types.ManagedObjectReference]string),
	born:      make(map[types.ManagedObjectReference]int64),
}

// Configure sets the disks directory and answer limits, and registers the registry handler.
func (c *ferryCBT) Configure(dir string, maxAreas int, window int64) {
	c.dir, c.maxAreas, c.window = dir, maxAreas, window
	Map.AddHandler(c)
}

func (c *ferryCBT) Reference() types.ManagedObjectReference { return c.self }

// PutObject freezes the disks of every new snapshot and stamps changeIds on its own disk copies.
func (c *ferryCBT) PutObject(obj mo.Reference) {
	if s, ok := obj.(*VirtualMachineSnapshot); ok && c.dir != "" {
		if err := c.freeze(s); err != nil {
			fmt.Fprintf(os.Stderr, "ferry-cbt: freeze %s: %v\n", s.Self.Value, err)
		}
	}
}

// UpdateObject makes every power state change of a VM a stun point of its disks.
// A power state change also ends a slow shutdown under way (ferry_power.go).
func (c *ferryCBT) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	vm, ok := obj.(*mo.VirtualMachine)
	if !ok {
		return
	}
	for _, change := range changes {
		if change.Name != "runtime.powerState" {
			continue
		}
		ferryShutdownEnded(vm.Self)
		if c.dir != "" && vm.Config != nil && vm.Config.InstanceUuid != "" {
			c.stun(c.vmDir(vm.Config.InstanceUuid))
		}
		return
	}
}

// RemoveObject deletes a removed snapshot's frozen disks; removing a snapshot is a stun point.
func (c *ferryCBT) RemoveObject(ref types.ManagedObjectReference) {
	c.mu.Lock()
	dir, ok := c.snapshots[ref]
	delete(c.snapshots, ref)
	delete(c.born, ref)
	c.mu.Unlock()
	if ok {
		_ = os.RemoveAll(dir)
		c.stun(filepath.Dir(filepath.Dir(dir)))
	}
}

// stun records the journal length of every disk of the VM in vmDir as its last stun point.
func (c *ferryCBT) stun(vmDir string) {
	journals, _ := filepath.Glob(filepath.Join(vmDir, "disk-*.journal"))
	for _, path := range journals {
		_ = withJournal(path, syscall.LOCK_EX, func(j *os.File) error {
			seq, err := countLines(j)
			if err != nil {
				return err
			}
			return writeStun(strings.TrimSuffix(path, ".journal")+".stun", seq)
		})
	}
}

func writeStun(path string, seq int64) error {
	return os.WriteFile(path, []byte(strconv.FormatInt(seq, 10)+"\n"), 0o644)
}

// stunSeq is the journal length at the disk's last stun point (base when none was recorded).
func stunSeq(vmDir string, key int32, base int64) int64 {
	data, err := os.ReadFile(diskFile(vmDir, key, "stun"))
	if err != nil {
		return base
	}
	seq, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || seq < base {
		return base
	}
	return seq
}

// toolsRunning says whether VMware Tools run in the VM: powered on and given tools by the lab.
func toolsRunning(vm *VirtualMachine) bool {
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || vm.Config == nil {
		return false
	}
	v, _ := ferryOption(vm.Config, "ferry.lab.tools")
	return v == "true"
}

// ferryOption is the value of the VM's extraConfig `key` ("", false when unset): the last entry
// of that key, for this vcsim appends an entry at each reconfigure instead of replacing the
// value as vSphere does (break-it 12f F6: setting a lab knob back never took).
func ferryOption(config *types.VirtualMachineConfigInfo, key string) (string, bool) {
	value, found := "", false
	for _, opt := range config.ExtraConfig {
		if o := opt.GetOptionValue(); o.Key == key {
			value, _ = o.Value.(string)
			found = true
		}
	}
	return value, found
}

// ferryShutdownFault is ShutdownGuest's fault (a patched line): ToolsUnavailable without tools.
func ferryShutdownFault(vm *VirtualMachine) types.BaseMethodFault {
	if toolsRunning(vm) {
		return nil
	}
	return &types.ToolsUnavailable{}
}

// ferryExtentName is the datastore path of the flat extent of disk `key` whose descriptor is
// `descriptor` ("[ds] dir/name.vmdk"): "[ds] dir/name-flat.vmdk", as vSphere names a disk it
// creates, unless the VM's extraConfig ferry.lab.extent.<key> names another file in the same
// directory. That is a descriptor renamed in the datastore browser (or a VM renamed by hand):
// its extent line still names the old file, and only layoutEx says which file holds the data.
func ferryExtentName(config *types.VirtualMachineConfigInfo, key int32, descriptor string) string {
	v, _ := ferryOption(config, "ferry.lab.extent."+strconv.Itoa(int(key)))
	if v != "" && !strings.Contains(v, "/") {
		dir := descriptor[:strings.LastIndex(descriptor, "/")+1]
		if !strings.Contains(descriptor, "/") {
			dir = descriptor[:strings.Index(descriptor, "]")+1] + " "
		}
		return dir + v
	}
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

func (c *ferryCBT) vmDir(uuid string) string { return filepath.Join(c.dir, uuid) }

func diskFile(vmDir string, key int32, ext string) string {
	return filepath.Join(vmDir, fmt.Sprintf("disk-%d.%s", key, ext))
}

func cbtOn(cfg *types.VirtualMachineConfigInfo) bool {
	return cfg.ChangeTrackingEnabled != nil && *cfg.ChangeTrackingEnabled
}

func diskCapacity(d *types.VirtualDisk) int64 {
	if d.CapacityInBytes > 0 {
		return d.CapacityInBytes
	}
	return d.CapacityInKB * 1024
}

func diskThin(d *types.VirtualDisk) bool {
	if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
		return b.ThinProvisioned != nil && *b.ThinProvisioned
	}
	return true
}

// grow is called by VirtualMachine.configure (a patched line) after its device changes: a disk
// whose capacity grew has its live file grown to it (the new part reads as zeros, as a vSphere
// disk extend leaves it).
func (c *ferryCBT) grow(vm *VirtualMachine) {
	if c.dir == "" || vm.Config == nil || vm.Config.InstanceUuid == "" {
		return
	}
	vmDir := c.vmDir(vm.Config.InstanceUuid)
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		live := diskFile(vmDir, disk.Key, "raw")
		if st, err := os.Stat(live); err == nil && st.Size() < diskCapacity(disk) {
			if err := os.Truncate(live, diskCapacity(disk)); err != nil {
				fmt.Fprintf(os.Stderr, "ferry-cbt: grow %s: %v\n", live, err)
			}
		}
	}
}

// changeTrackingSet is called by VirtualMachine.configure (a patched line) after a reconfigure:
// any transition of changeTrackingEnabled resets CBT, so existing changeIds become invalid; turning
// it on starts a new epoch for every disk.
func (c *ferryCBT) changeTrackingSet(vm *VirtualMachine, before bool) {
	if c.dir == "" || vm.Config == nil || vm.Config.InstanceUuid == "" || cbtOn(vm.Config) == before {
		return
	}
	vmDir := c.vmDir(vm.Config.InstanceUuid)
	epochs, _ := filepath.Glob(filepath.Join(vmDir, "disk-*.cbt"))
	for _, e := range epochs {
		_ = os.Remove(e)
	}
	if !cbtOn(vm.Config) {
		return
	}
	// Tracking starts now: each disk gets a new epoch at its journal's current length.
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		_ = withJournal(diskFile(vmDir, disk.Key, "journal"), syscall.LOCK_EX, func(j *os.File) error {
			seq, err := countLines(j)
			if err != nil {
				return err
			}
			_, _, err = c.epoch(vmDir, disk.Key, seq)
			return err
		})
	}
}

func (c *ferryCBT) freeze(s *VirtualMachineSnapshot) error {
	vm, ok := Map.Get(s.Vm).(*VirtualMachine)
	if !ok {
		return errors.New("snapshot of an unknown VM")
	}
	uuid := vm.Config.InstanceUuid
	snapDir := filepath.Join(c.vmDir(uuid), "snapshots", s.Self.Value)
	if err := os.MkdirAll(snapDir, 0o755); err != nil {
		return err
	}
	c.mu.Lock()
	c.snapshots[s.Self] = snapDir
	c.mu.Unlock()

	meta := ferrySnapshotMeta{VM: uuid, Disks: map[string]ferryDiskMeta{}}
	devices := make([]types.BaseVirtualDevice, len(s.Config.Hardware.Device))
	copy(devices, s.Config.Hardware.Device)
	for i, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		copied, dm, err := c.freezeDisk(vm, s, snapDir, disk)
		if err != nil {
			return err
		}
		devices[i] = copied
		meta.Disks[strconv.Itoa(int(disk.Key))] = dm
	}
	s.Config.Hardware.Device = devices
	if err := writeJSON(filepath.Join(snapDir, "meta.json"), meta); err != nil {
		return err
	}
	c.frozen(s.Self)
	return nil
}

// freezeDisk copies the live disk into the snapshot and returns a deep copy of the device whose
// backing carries the changeId (the snapshot's config initially shares devices with the live VM).
func (c *ferryCBT) freezeDisk(vm *VirtualMachine, s *VirtualMachineSnapshot, snapDir string,
	disk *types.VirtualDisk) (*types.VirtualDisk, ferryDiskMeta, error) {
	vmDir := c.vmDir(vm.Config.InstanceUuid)
	dm := ferryDiskMeta{Capacity: diskCapacity(disk), Thin: diskThin(disk)}
	err := withJournal(diskFile(vmDir, disk.Key, "journal"), syscall.LOCK_EX, func(j *os.File) error {
		seq, err := countLines(j)
		if err != nil {
			return err
		}
		dm.Seq = seq
		if err := writeStun(diskFile(vmDir, disk.Key, "stun"), seq); err != nil {
			return err
		}
		live := diskFile(vmDir, disk.Key, "raw")
		if _, err := os.Stat(live); err == nil {
			dm.Frozen = true
			return copySparse(live, filepath.Join(snapDir, fmt.Sprintf("disk-%d.raw", disk.Key)))
		}
		return nil
	})
	if err != nil {
		return nil, dm, err
	}
	copied := *disk
	if cbtOn(&s.Config) {
		epoch, base, err := c.epoch(vmDir, disk.Key, dm.Seq)
		if err != nil {
			return nil, dm, err
		}
		dm.Epoch, dm.Base = epoch, base
		if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			backing := *b
			backing.ChangeId = fmt.Sprintf("%s/%d", epoch, dm.Seq)
			copied.Backing = &backing
		}
	}
	return &copied, dm, nil
}

// epoch returns the disk's CBT epoch, starting one at sequence seq when tracking has none.
func (c *ferryCBT) epoch(vmDir string, key int32, seq int64) (string, int64, error) {
	path := diskFile(vmDir, key, "cbt")
	if data, err := os.ReadFile(path); err == nil {
		parts := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(parts) == 2 {
			base, err := strconv.ParseInt(parts[1], 10, 64)
			return parts[0], base, err
		}
	}
	id, err := vsphereUUID()
	if err != nil {
		return "", 0, err
	}
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return "", 0, err
	}
	return id, seq, os.WriteFile(path, []byte(fmt.Sprintf("%s\n%d\n", id, seq)), 0o644)
}

// vsphereUUID formats 16 random bytes the way vSphere prints a CBT uuid ("52 3c ... 0e-80 46 ... 4d").
func vsphereUUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	hex := make([]string, 16)
	for i, v := range b {
		hex[i] = fmt.Sprintf("%02x", v)
	}
	return strings.Join(hex[:8], " ") + "-" + strings.Join(hex[8:], " "), nil
}

func withJournal(path string, how int, f func(*os.File) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	j, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer j.Close()
	if err := syscall.Flock(int(j.Fd()), how); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(j.Fd()), syscall.LOCK_UN) }()
	return f(j)
}

func countLines(f *os.File) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

func copySparse(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp: %v: %s", err, out)
	}
	return nil
}

func writeJSON(path string, v interface{}) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// QueryChangedDiskAreas answers like vSphere: areas of the disk at the snapshot that changed since
// changeId ("*": all allocated areas), starting at startOffset and covering a bounded window; the
// caller loops with startOffset = startOffset + length until the disk's capacity.
func (vm *VirtualMachine) QueryChangedDiskAreas(ctx *Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := new(methods.QueryChangedDiskAreasBody)
	info, fault := FerryCBT.query(vm, req)
	if fault != nil {
		body.Fault_ = Fault("", fault)
		return body
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: *info}
	return body
}

func invalidArgument(prop string) types.BaseMethodFault {
	return &types.InvalidArgument{InvalidProperty: prop}
}

func (c *ferryCBT) query(vm *VirtualMachine, req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, types.BaseMethodFault) {
	if req.Snapshot == nil {
		return nil, invalidArgument("snapshot")
	}
	s, ok := Map.Get(*req.Snapshot).(*VirtualMachineSnapshot)
	if !ok || s.Vm != vm.Self {
		return nil, &types.ManagedObjectNotFound{Obj: *req.Snapshot}
	}
	var disk *types.VirtualDisk
	for _, dev := range s.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return nil, invalidArgument("deviceKey")
	}
	capacity := diskCapacity(disk)
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		return nil, invalidArgument("startOffset")
	}
	ctk := &types.FileFault{File: fmt.Sprintf("[%s] %s-ctk.vmdk", vm.Name, vm.Name)}
	if !cbtOn(&s.Config) {
		return nil, ctk
	}
	snapDir := filepath.Join(c.vmDir(vm.Config.InstanceUuid), "snapshots", s.Self.Value)
	var meta ferrySnapshotMeta
	data, err := os.ReadFile(filepath.Join(snapDir, "meta.json"))
	if err != nil || json.Unmarshal(data, &meta) != nil {
		return nil, ctk
	}
	dm, ok := meta.Disks[strconv.Itoa(int(disk.Key))]
	if !ok || dm.Epoch == "" {
		return nil, ctk
	}
	areas, fault := c.changedAreas(vm, snapDir, disk.Key, dm, req.ChangeId, ctk)
	if fault != nil {
		return nil, fault
	}
	return c.answer(mergeAreas(areas, capacity), req.StartOffset, capacity), nil
}

func (c *ferryCBT) changedAreas(vm *VirtualMachine, snapDir string, key int32, dm ferryDiskMeta,
	changeID string, ctk types.BaseMethodFault) ([]types.DiskChangeExtent, types.BaseMethodFault) {
	if changeID == "*" {
		if !dm.Thin {
			return []types.DiskChangeExtent{{Start: 0, Length: dm.Capacity}}, nil
		}
		if !dm.Frozen {
			return nil, nil
		}
		areas, err := allocatedAreas(filepath.Join(snapDir, fmt.Sprintf("disk-%d.raw", key)))
		if err != nil {
			return nil, ctk
		}
		return areas, nil
	}
	slash := strings.LastIndex(changeID, "/")
	if slash < 0 {
		return nil, invalidArgument("changeId")
	}
	seq, err := strconv.ParseInt(changeID[slash+1:], 10, 64)
	if err != nil {
		return nil, invalidArgument("changeId")
	}
	if changeID[:slash] != dm.Epoch {
		return nil, ctk
	}
	if seq < dm.Base || seq > dm.Seq {
		return nil, invalidArgument("changeId")
	}
	areas, err := journalAreas(diskFile(c.vmDir(vm.Config.InstanceUuid), key, "journal"), seq, dm.Seq)
	if err != nil {
		return nil, ctk
	}
	return areas, nil
}

// journalAreas returns the extents of journal lines [from, to).
func journalAreas(path string, from, to int64) ([]types.DiskChangeExtent, error) {
	var areas []types.DiskChangeExtent
	err := withJournal(path, syscall.LOCK_SH, func(j *os.File) error {
		sc := bufio.NewScanner(j)
		for n := int64(0); n < to && sc.Scan(); n++ {
			if n < from {
				continue
			}
			var off, length int64
			if _, err := fmt.Sscanf(sc.Text(), "%d %d", &off, &length); err != nil {
				return err
			}
			areas = append(areas, types.DiskChangeExtent{Start: off, Length: length})
		}
		return sc.Err()
	})
	return areas, err
}

// allocatedAreas lists the data extents of a sparse file (SEEK_DATA / SEEK_HOLE).
func allocatedAreas(path string) ([]types.DiskChangeExtent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var areas []types.DiskChangeExtent
	for off := int64(0); off < st.Size(); {
		data, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break
			}
			return nil, err
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return nil, err
		}
		areas = append(areas, types.DiskChangeExtent{Start: data, Length: hole - data})
		off = hole
	}
	return areas, nil
}

// mergeAreas sorts, clips to capacity and unites overlapping or adjacent extents.
func mergeAreas(areas []types.DiskChangeExtent, capacity int64) []types.DiskChangeExtent {
	sort.Slice(areas, func(i, j int) bool { return areas[i].Start < areas[j].Start })
	var out []types.DiskChangeExtent
	for _, a := range areas {
		end := a.Start + a.Length
		if end > capacity {
			end = capacity
		}
		if a.Length <= 0 || a.Start >= end {
			continue
		}
		if n := len(out); n > 0 && a.Start <= out[n-1].Start+out[n-1].Length {
			if end > out[n-1].Start+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Start
			}
			continue
		}
		out = append(out, types.DiskChangeExtent{Start: a.Start, Length: end - a.Start})
	}
	return out
}

// answer cuts one answer out of the merged areas: from start, at most c.window bytes of disk and
// c.maxAreas areas; an area crossing the window's end is split there.
func (c *ferryCBT) answer(areas []types.DiskChangeExtent, start, capacity int64) *types.DiskChangeInfo {
	limit := start + c.window
	if limit > capacity {
		limit = capacity
	}
	var out []types.DiskChangeExtent
	for _, a := range areas {
		s, e := a.Start, a.Start+a.Length
		if e <= start || s >= limit {
			continue
		}
		if s < start {
			s = start
		}
		if e > limit {
			e = limit
		}
		out = append(out, types.DiskChangeExtent{Start: s, Length: e - s})
		if len(out) == c.maxAreas {
			limit = e
			break
		}
	}
	return &types.DiskChangeInfo{StartOffset: start, Length: limit - start, ChangedArea: out}
}

// Get is what the PropertyCollector reads for a VM: a copy whose live disks carry their current
// changeId ("<epoch>/<journal length>"), as vSphere reports one for a CBT-enabled VM's disks. So a
// refresh sees a VM whose disks did not change since a snapshot as in sync (same changeId), and a
// CBT reset as a new epoch. Without tracking, disks carry none. Its guest says what VMware Tools
// would: tools running or not, and guest.guestState running, shuttingDown or notRunning.
func (vm *VirtualMachine) Get() mo.Reference {
	live := vm.VirtualMachine
	if FerryCBT.dir == "" || vm.Config == nil || vm.Config.InstanceUuid == "" {
		return &live
	}
	vmDir := FerryCBT.vmDir(vm.Config.InstanceUuid)
	live.LayoutEx = ferryLayout(vmDir, vm.Config, vm.LayoutEx)
	if vm.Guest != nil {
		guest := *vm.Guest
		guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
		guest.GuestState = string(types.VirtualMachineGuestStateNotRunning)
		if toolsRunning(vm) {
			guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
			guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
			guest.GuestState = string(types.VirtualMachineGuestStateRunning)
			if ferryShuttingDown(vm.Self) { // ferry_power.go: a slow shutdown under way
				guest.GuestState = string(types.VirtualMachineGuestStateShuttingDown)
			}
		}
		live.Guest = &guest
	}
	if !cbtOn(vm.Config) {
		return &live
	}
	config := *vm.Config
	devices := make([]types.BaseVirtualDevice, len(config.Hardware.Device))
	copy(devices, config.Hardware.Device)
	for i, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		running := vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
		if id, ok := liveChangeID(vmDir, disk.Key, running); ok {
			if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				backing := *b
				backing.ChangeId = id
				copied := *disk
				copied.Backing = &backing
				devices[i] = &copied
			}
		}
	}
	config.Hardware.Device = devices
	live.Config = &config
	return &live
}

// liveChangeID is the disk's changeId now: its epoch (begun now if tracking has none yet, as
// vSphere begins one when tracking is enabled) and, for a running VM, the journal's length at
// its last stun point, else the journal's current length.
func liveChangeID(vmDir string, key int32, running bool) (string, bool) {
	if _, err := os.Stat(diskFile(vmDir, key, "raw")); err != nil {
		return "", false // not a lab disk with content
	}
	var id string
	err := withJournal(diskFile(vmDir, key, "journal"), syscall.LOCK_EX, func(j *os.File) error {
		seq, err := countLines(j)
		if err != nil {
			return err
		}
		epoch, base, err := FerryCBT.epoch(vmDir, key, seq)
		if running {
			seq = stunSeq(vmDir, key, base)
		}
		id = fmt.Sprintf("%s/%d", epoch, seq)
		return err
	})
	return id, err == nil
}

// ferryLayout is the VM's layoutEx with its lab disks' files as vSphere lists them: per disk a
// descriptor and an extent whose size is what the disk occupies on the datastore (a thin disk:
// the lab file's allocated blocks; a thick one: its capacity). Planning reads it as the bytes a
// full copy moves at most. The extent is named as the descriptor's extent line names it
// (ferryExtentName).
func ferryLayout(vmDir string, config *types.VirtualMachineConfigInfo, layout *types.VirtualMachineFileLayoutEx) *types.VirtualMachineFileLayoutEx {
	devices := config.Hardware.Device
	out := &types.VirtualMachineFileLayoutEx{}
	key := int32(0)
	if layout != nil {
		out.Snapshot = layout.Snapshot
		out.Timestamp = layout.Timestamp
		for _, f := range layout.File {
			if f.Type != string(types.VirtualMachineFileLayoutExFileTypeDiskDescriptor) &&
				f.Type != string(types.VirtualMachineFileLayoutExFileTypeDiskExtent) {
				out.File = append(out.File, f)
				if f.Key >= key {
					key = f.Key + 1
				}
			}
		}
	}
	for _, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		size := diskCapacity(disk)
		if diskThin(disk) {
			var st syscall.Stat_t
			if err := syscall.Stat(diskFile(vmDir, disk.Key, "raw"), &st); err != nil {
				continue
			}
			size = st.Blocks * 512
		}
		extent := ferryExtentName(config, disk.Key, b.FileName)
		out.File = append(out.File,
			types.VirtualMachineFileLayoutExFileInfo{Key: key, Name: b.FileName,
				Type: string(types.VirtualMachineFileLayoutExFileTypeDiskDescriptor), Size: 512, UniqueSize: 512},
			types.VirtualMachineFileLayoutExFileInfo{Key: key + 1, Name: extent,
				Type: string(types.VirtualMachineFileLayoutExFileTypeDiskExtent), Size: size, UniqueSize: size})
		out.Disk = append(out.Disk, types.VirtualMachineFileLayoutExDiskLayout{Key: disk.Key,
			Chain: []types.VirtualMachineFileLayoutExDiskUnit{{FileKey: []int32{key, key + 1}}}})
		key += 2
	}
	return out
}
