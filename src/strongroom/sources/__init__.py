"""What is read: directory trees now; block devices, images and VMs later."""
