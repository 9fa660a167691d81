package cli

// oNoFollow is 0 on windows, which has no O_NOFOLLOW; os.Root still keeps
// every file inside the sysroot.
const oNoFollow = 0
