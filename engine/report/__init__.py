"""`ferry report`: what the migrations did, from state and the apply event logs."""
