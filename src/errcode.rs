//! `confd_errno` numbers and their `confd_strerror()` texts (spec §B.4).

macro_rules! errcodes {
    ($($name:ident = $num:literal, $text:literal;)*) => {
        $(
            #[doc = $text]
            pub const $name: i32 = $num;
        )*
        /// The fixed description of an error number; "Unknown error" for
        /// numbers without one.
        pub fn strerror(code: i32) -> &'static str {
            match code {
                $($num => $text,)*
                _ => "Unknown error",
            }
        }
        /// The symbolic name of an error number ("CONFD_ERR_HA_BADTOKEN").
        pub fn name(code: i32) -> Option<&'static str> {
            match code {
                $($num => Some(stringify!($name)),)*
                _ => None,
            }
        }
    };
}

errcodes! {
    CONFD_ERR_NOEXISTS = 1, "item does not exist";
    CONFD_ERR_ALREADY_EXISTS = 2, "item already exists";
    CONFD_ERR_ACCESS_DENIED = 3, "access denied";
    CONFD_ERR_NOT_WRITABLE = 4, "item is not writable";
    CONFD_ERR_BADTYPE = 5, "item has a bad/wrong type";
    CONFD_ERR_NOTCREATABLE = 6, "item is not creatable";
    CONFD_ERR_NOTDELETABLE = 7, "item is not deletable";
    CONFD_ERR_BADPATH = 8, "badly formatted or nonexistent path";
    CONFD_ERR_NOSTACK = 9, "cannot pop an empty stack";
    CONFD_ERR_LOCKED = 10, "locked";
    CONFD_ERR_INUSE = 11, "in use";
    CONFD_ERR_NOTSET = 12, "notset";
    CONFD_ERR_NON_UNIQUE = 13, "non unique";
    CONFD_ERR_BAD_KEYREF = 14, "bad keyref";
    CONFD_ERR_TOO_FEW_ELEMS = 15, "too few elems";
    CONFD_ERR_TOO_MANY_ELEMS = 16, "too many elems";
    CONFD_ERR_BADSTATE = 17, "operation in wrong state";
    CONFD_ERR_INTERNAL = 18, "internal error";
    CONFD_ERR_EXTERNAL = 19, "external error";
    CONFD_ERR_MALLOC = 20, "Failed to allocate";
    CONFD_ERR_PROTOUSAGE = 21, "Bad protocol usage or unexpected retval";
    CONFD_ERR_NOSESSION = 22, "A session must be established prior to this command";
    CONFD_ERR_TOOMANYTRANS = 23, "Too many transactions";
    CONFD_ERR_OS = 24, "system call failed";
    CONFD_ERR_HA_CONNECT = 25, "Failed to connect to remote HA node";
    CONFD_ERR_HA_CLOSED = 26, "Remote HA node closed socket to us";
    CONFD_ERR_HA_BADFXS = 27, "Remote HA node has incompatible config to us";
    CONFD_ERR_HA_BADTOKEN = 28, "Remote HA node has bad credentials";
    CONFD_ERR_HA_BADNAME = 29, "remote HA node has other/wrong name";
    CONFD_ERR_HA_BIND = 30, "failed to bind HA socket";
    CONFD_ERR_HA_NOTICK = 31, "Remote HA node doesn't send us any ticks";
    CONFD_ERR_VALIDATION_WARNING = 32, "Validation warnings";
    CONFD_ERR_SUBAGENT_DOWN = 33, "Subagent down";
    CONFD_ERR_LIB_NOT_INITIALIZED = 34, "Library not initialized";
    CONFD_ERR_TOO_MANY_SESSIONS = 35, "Maximum number of sessions reached";
    CONFD_ERR_BAD_CONFIG = 36, "Error in a configuration";
    CONFD_ERR_RESOURCE_DENIED = 37, "Data provider returned CONFD_ERRCODE_RESOURCE_DENIED";
    CONFD_ERR_INCONSISTENT_VALUE = 38, "Data provider returned CONFD_ERRCODE_INCONSISTENT_VALUE";
    CONFD_ERR_APPLICATION_INTERNAL = 39, "Data provider returned CONFD_ERRCODE_APPLICATION_INTERNAL";
    CONFD_ERR_UNSET_CHOICE = 40, "No case selected for mandatory choice";
    CONFD_ERR_MUST_FAILED = 41, "Unsatisfied must constraint";
    CONFD_ERR_MISSING_INSTANCE = 42, "Required instance does not exist";
    CONFD_ERR_INVALID_INSTANCE = 43, "Instance does not conform to path filters";
    CONFD_ERR_UNAVAILABLE = 44, "Unavailable functionality";
    CONFD_ERR_EOF = 45, "Lost connection to ConfD";
    CONFD_ERR_NOTMOVABLE = 46, "item is not movable";
    CONFD_ERR_HA_WITH_UPGRADE = 47, "HA secondary not allowed during upgrade";
    CONFD_ERR_TIMEOUT = 48, "Operation timed out";
    CONFD_ERR_ABORTED = 49, "Operation was aborted";
    CONFD_ERR_XPATH = 50, "XPath compilation/evaluation failed";
    CONFD_ERR_NOT_IMPLEMENTED = 51, "Operation not implemented";
    CONFD_ERR_HA_BADVSN = 52, "Remote HA node has incompatible version";
    CONFD_ERR_POLICY_FAILED = 53, "Policy expression evaluated to false";
    CONFD_ERR_POLICY_COMPILATION_FAILED = 54, "Policy XPath expression could not be compiled";
    CONFD_ERR_POLICY_EVALUATION_FAILED = 55, "Policy expression failed XPath evaluation";
    NCS_ERR_CONNECTION_REFUSED = 56, "Unknown error";
    CONFD_ERR_START_FAILED = 57, "Failed to proceed to next start phase";
    CONFD_ERR_DATA_MISSING = 58, "Data provider returned CONFD_ERRCODE_DATA_MISSING";
    CONFD_ERR_CLI_CMD = 59, "CLI command error";
    CONFD_ERR_UPGRADE_IN_PROGRESS = 60, "Not allowed during upgrade";
    CONFD_ERR_NOTRANS = 61, "Transaction not found";
    NCS_ERR_SERVICE_CONFLICT = 62, "Unknown error";
    NCS_ERR_CONNECTION_TIMEOUT = 63, "Unknown error";
    NCS_ERR_CONNECTION_CLOSED = 64, "Unknown error";
    NCS_ERR_DEVICE = 65, "Unknown error";
    NCS_ERR_TEMPLATE = 66, "Unknown error";
    CONFD_ERR_NO_MOUNT_ID = 67, "Path is ambiguous due to traversing a mount point";
    CONFD_ERR_STALE_INSTANCE = 68, "Required instance does not exist";
    CONFD_ERR_HA_BADCONFIG = 69, "Remote HA node has bad configuration";
    CONFD_ERR_TRANSACTION_CONFLICT = 70, "Conflict detected";
    CONFD_ERR_HA_ABORT = 71, "Transaction aborted";
    CONFD_ERR_BAD_PAYLOAD = 72, "Error in payload data";
    CONFD_ERR_CHECKSUM_MISMATCH = 73, "Checksum mismatch";
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn texts_and_names() {
        assert_eq!(
            strerror(CONFD_ERR_HA_BADTOKEN),
            "Remote HA node has bad credentials"
        );
        assert_eq!(strerror(CONFD_ERR_EOF), "Lost connection to ConfD");
        assert_eq!(strerror(0), "Unknown error");
        assert_eq!(strerror(74), "Unknown error");
        assert_eq!(name(30), Some("CONFD_ERR_HA_BIND"));
    }
}
