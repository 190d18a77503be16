/* postroomd: initialise APR and hand over to the platform glue. */
#include <apr_general.h>

#ifdef _WIN32
#include "win32/service.h"
#define PLATFORM_MAIN pr_win32_main
#else
#include "unix/daemon.h"
#define PLATFORM_MAIN pr_daemon_main
#endif

int main(int argc, const char *const *argv)
{
    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS) return 1;
    int rc = PLATFORM_MAIN(argc, argv);
    apr_terminate();
    return rc;
}
