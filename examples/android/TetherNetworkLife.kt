// The reconnect cue wired to Android: ConnectivityManager for network changes and the process
// lifecycle (androidx.lifecycle:lifecycle-process) for pause and unpause. Android only, so it is
// not compiled here (examples/kotlin, which the Maven build compiles and runs, is plain JVM);
// it uses only API 21 calls (registerDefaultNetworkCallback would need API 24).
import org.tether.TetherClient
import org.tether.TetherException
import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner

class TetherNetworkLife(private val client: TetherClient, context: Context) : DefaultLifecycleObserver {
    private val connectivity = context.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager

    private val network = object : ConnectivityManager.NetworkCallback() {
        // A new network: the socket may be bound to the old one. A lost one: it may be dead.
        // Either way probe now instead of waiting for the next ping.
        override fun onAvailable(network: Network) = cue { client.reconnectNow() }
        override fun onLost(network: Network) = cue { client.reconnectNow() }
    }

    fun start() {
        ProcessLifecycleOwner.get().lifecycle.addObserver(this)   // on the main thread
        val request = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .build()
        connectivity.registerNetworkCallback(request, network)
    }

    fun stop() {
        ProcessLifecycleOwner.get().lifecycle.removeObserver(this)
        connectivity.unregisterNetworkCallback(network)
    }

    // The whole app went to the background: let the OS suspend the socket in peace; the
    // backend keeps what arrives meanwhile.
    override fun onStop(owner: LifecycleOwner) = cue { client.pause() }

    override fun onStart(owner: LifecycleOwner) = cue {
        client.unpause()        // does nothing if it was not paused
        client.reconnectNow()   // and when it was not, check the link is still alive
    }

    // The callbacks may outlive the client (closed, or ended for good after a refused
    // login): nothing left to tell it.
    private fun cue(f: () -> Unit) {
        try { f() } catch (e: TetherException) { }
    }
}
