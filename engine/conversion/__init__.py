"""Guest conversion for KVM: virt-v2v-in-place over the volumes attached to the conversion host."""
