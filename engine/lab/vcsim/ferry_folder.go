// vSphere's datastore file access (/folder) for the lab vCenter (compiled into govmomi's package
// simulator; the simulator's own /folder handler is wrapped by a patched line in NewServer).
//
//	GET|HEAD /folder/<dir>/<file>?dcPath=<datacenter>&dsName=<datastore>
//
// As on vCenter, a request needs the SOAP session's cookie (vmware_soap_session, from Login):
// without a valid one the answer is 401. A VM disk's flat extent (the diskExtent file its
// layoutEx lists for backing "[ds] dir/name.vmdk": "[ds] dir/name-flat.vmdk", or the file
// ferryExtentName says) is served from the lab's disk files
// with HTTP range requests (206 and Content-Range; http.ServeContent) when dcPath names the VM's
// datacenter's inventory path (dcMatches; 404 otherwise). Any other request is the simulator's
// datastore folder handler's, as before (404 for an unknown dcPath or dsName).
//
// Which bytes the flat extent holds: on vSphere a snapshot makes the base extent read-only and
// sends guest writes to a delta disk (dir/name-000001-delta.vmdk, the VM's backing then names
// dir/name-000001.vmdk), so while snapshots exist the base extent holds the disk as the OLDEST of
// them froze it. The lab keeps one live file per disk that guest writes always change, and a
// frozen copy per snapshot (ferry_cbt.go), so it serves, at the base extent's path:
//   - the frozen copy of the VM's oldest existing snapshot, while the VM has one;
//   - the live file otherwise (all writes consolidated, as after vSphere removes the snapshots).
//
// What differs from vSphere: the VM's backing keeps naming the base descriptor after a snapshot
// (no -000001 delta disk is listed or served); descriptors (dir/name.vmdk) are not served; a
// running VM's base extent without a snapshot is readable (ESXi holds a lock on it).
package simulator

import (
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// frozenOrder numbers snapshots in the order their disks were frozen (oldest first).
var frozenOrder int64

// ferryServeFolder authenticates /folder requests and serves lab disk extents; other paths go
// to the simulator's handler.
func ferryServeFolder(s *Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cookie, err := r.Cookie(soap.SessionCookieName)
		if err != nil {
			http.Error(w, "no vmware_soap_session cookie", http.StatusUnauthorized)
			return
		}
		if _, ok := s.sm.getSession(cookie.Value); !ok {
			http.Error(w, "not authenticated", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if file, ok := FerryCBT.extentFile(r); ok {
				if file == "" {
					http.Error(w, "no datacenter at dcPath", http.StatusNotFound)
					return
				}
				ferryServeFile(w, r, file)
				return
			}
		}
		s.ServeDatastore(w, r)
	}
}

func ferryServeFile(w http.ResponseWriter, r *http.Request, file string) {
	f, err := os.Open(file)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	http.ServeContent(w, r, path.Base(r.URL.Path), st.ModTime(), f)
}

// extentFile is the lab file holding the flat extent the request names, if it names one ("" when
// the extent is a lab VM's but dcPath is not its datacenter's inventory path).
func (c *ferryCBT) extentFile(r *http.Request) (string, bool) {
	if c.dir == "" {
		return "", false
	}
	ds := r.URL.Query().Get("dsName")
	rel := strings.TrimPrefix(r.URL.Path, folderPrefix)
	if ds == "" || !strings.HasSuffix(rel, ".vmdk") {
		return "", false
	}
	want := "[" + ds + "] " + rel
	for _, e := range Map.All("VirtualMachine") {
		vm, ok := e.(*VirtualMachine)
		if !ok || vm.Config == nil || vm.Config.InstanceUuid == "" {
			continue
		}
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok || ferryExtentName(vm.Config, disk.Key, b.FileName) != want {
				continue
			}
			if !dcMatches(Map.getEntityDatacenter(vm), r.URL.Query().Get("dcPath")) {
				return "", true // 404, as vCenter (not the simulator's handler: it may find a file)
			}
			return c.baseExtent(c.vmDir(vm.Config.InstanceUuid), disk.Key), true
		}
	}
	return "", false
}

// dcMatches says whether dcPath names datacenter dc as vSphere's datastore file access takes it:
// the datacenter's inventory path below the root folder ("DC0", "Region-A/DC0"; govmomi sends it
// with a leading "/"), not just a path that ends in its name (break-it 15b N5: "Wrong/Path/DC0"
// was served, vCenter answers 404). The name alone names only a datacenter in the root folder.
func dcMatches(dc *Datacenter, dcPath string) bool {
	if dc == nil || dcPath == "" {
		return false
	}
	return strings.TrimPrefix(dcPath, "/") == dcInventoryPath(dc)
}

// dcInventoryPath is dc's inventory path below the root folder: its folders' names and its own.
func dcInventoryPath(dc *Datacenter) string {
	parts := []string{dc.Name}
	for ref := dc.Parent; ref != nil; {
		folder, ok := Map.Get(*ref).(*Folder)
		if !ok || folder.Parent == nil { // the root folder ("Datacenters") is not in the path
			break
		}
		parts = append([]string{folder.Name}, parts...)
		ref = folder.Parent
	}
	return strings.Join(parts, "/")
}

// baseExtent is the disk's frozen copy in the VM's oldest snapshot, or its live file.
func (c *ferryCBT) baseExtent(vmDir string, key int32) string {
	name := "disk-" + strconv.Itoa(int(key)) + ".raw"
	c.mu.Lock()
	defer c.mu.Unlock()
	best, order := "", int64(-1)
	for ref, dir := range c.snapshots {
		born, ok := c.born[ref]
		if !ok || filepath.Dir(filepath.Dir(dir)) != vmDir {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			continue
		}
		if order < 0 || born < order {
			best, order = filepath.Join(dir, name), born
		}
	}
	if best != "" {
		return best
	}
	return filepath.Join(vmDir, name)
}

// frozen records that snapshot ref's disks are copied (from then on it is served).
func (c *ferryCBT) frozen(ref types.ManagedObjectReference) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.born[ref] = atomic.AddInt64(&frozenOrder, 1)
}
