// A lab knob that ends every vCenter session (compiled into govmomi's package simulator; the
// handler is registered by a patched line in NewServer, beside /folder).
//
//	POST /ferry/expire-sessions
//
// ends every SOAP session, as vCenter does when sessions time out or an administrator
// terminates them: SOAP calls with the old cookie fault with NotAuthenticated and /folder answers
// 401 to it, until the client logs in again. The answer is the number of sessions ended, as
// text. The server listens on loopback only (main.go); any other method is 405.
package simulator

import (
	"fmt"
	"net/http"
)

// ferryExpireSessionsPath is where the knob is served.
const ferryExpireSessionsPath = "/ferry/expire-sessions"

func ferryExpireSessions(s *Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		sessionMutex.Lock()
		ended := len(s.sm.sessions)
		for id := range s.sm.sessions {
			delete(s.sm.sessions, id)
		}
		sessionMutex.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%d\n", ended)
	}
}
