// A guest that takes its time to shut down, for the lab vCenter (compiled into govmomi's package
// simulator).
//
// On vSphere, ShutdownGuest only asks VMware Tools to shut the guest down and returns at once;
// the VM powers off when the guest has finished, seconds or minutes later (vSphere API reference,
// VirtualMachine.ShutdownGuest: "the method returns without waiting for the guest OS to complete
// the shutdown"). vcsim powers it off inside the call. A VM whose extraConfig has
// ferry.lab.shutdown_seconds = "N" (N > 0) powers off N seconds after ShutdownGuest returns,
// unless it was powered off (or on again) by then; without it the simulator's instant shutdown
// stays.
package simulator

import (
	"strconv"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// ferryShutdowns holds the shutdowns under way, by VM: any power state change of the VM ends its
// entry (ferryShutdownEnded), so a power cycle since the ask is not undone by the old shutdown.
var ferryShutdowns = struct {
	sync.Mutex
	asked map[types.ManagedObjectReference]*int
}{asked: map[types.ManagedObjectReference]*int{}}

// ferryShutdownSeconds is the guest's shutdown time the lab gave the VM (0: none, at once).
func ferryShutdownSeconds(vm *VirtualMachine) float64 {
	if vm.Config == nil {
		return 0
	}
	v, _ := ferryOption(vm.Config, "ferry.lab.shutdown_seconds")
	seconds, err := strconv.ParseFloat(v, 64)
	if err != nil || seconds < 0 {
		return 0
	}
	return seconds
}

// ferryShutdownLater powers the VM off after its guest's shutdown time, and says whether it did
// so (ShutdownGuest then returns at once, the VM still powered on). A shutdown asked again while
// one is under way changes nothing, as on vSphere.
func ferryShutdownLater(ctx *Context, vm *VirtualMachine) bool {
	seconds := ferryShutdownSeconds(vm)
	if seconds <= 0 {
		return false
	}
	ferryShutdowns.Lock()
	defer ferryShutdowns.Unlock()
	if _, underway := ferryShutdowns.asked[vm.Self]; underway {
		return true
	}
	token := new(int)
	ferryShutdowns.asked[vm.Self] = token
	time.AfterFunc(time.Duration(seconds*float64(time.Second)), func() {
		Map.WithLock(vm, func() {
			ferryShutdowns.Lock()
			current := ferryShutdowns.asked[vm.Self]
			ferryShutdowns.Unlock()
			if current != token || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return
			}
			vm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff
			vm.Summary.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff
			event := vm.event()
			ctx.postEvent(
				&types.VmGuestShutdownEvent{VmEvent: event},
				&types.VmPoweredOffEvent{VmEvent: event},
			)
			vm.run.stop(vm)
			Map.Update(vm, []types.PropertyChange{
				{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
				{Name: "summary.runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
			})
		})
	})
	return true
}

// ferryShuttingDown says whether a slow shutdown of the VM is under way (guest.guestState
// shuttingDown, as VMware Tools report it).
func ferryShuttingDown(ref types.ManagedObjectReference) bool {
	ferryShutdowns.Lock()
	defer ferryShutdowns.Unlock()
	_, underway := ferryShutdowns.asked[ref]
	return underway
}

// ferryShutdownEnded forgets the VM's shutdown under way: its power state changed.
func ferryShutdownEnded(ref types.ManagedObjectReference) {
	ferryShutdowns.Lock()
	delete(ferryShutdowns.asked, ref)
	ferryShutdowns.Unlock()
}
