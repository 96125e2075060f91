package embedded

import "errors"

// errPortTaken marks a child that could not listen because another process
// took its port between the pick and the bind.
var errPortTaken = errors.New("port already in use")
